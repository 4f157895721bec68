"""A libcurl multi handle and a pool of easy handles: requests in, ended transfers out.

What the multi backend and the gevent backend's ``--client curl`` drive. Neither
runs a thread or a greenlet per download: ``start`` puts a request on a free easy
handle (one per pool slot, each a ``CurlTransport``), libcurl moves every transfer
when its driver calls ``socket_action`` or ``on_timeout``, and ``ended`` hands back
the transfers libcurl reports over, each with its transport and libcurl's code:
``transport.finish(code, message)`` makes its Head (or raises its failure). The
driver decides only how to wait for sockets and for libcurl's timer: epoll in
the multi backend, gevent's own loop under gevent.

Nothing here knows tasks or Results: what rides with each transfer is the
caller's ``token`` (backends/multi.py passes its ``Download``).

libcurl watches ``--max-time`` and the connect timeout itself; the read timeout
(silence) and ``--min-speed`` are the guard's, asked by ``overdue`` on the
driver's tick (every ``tick`` seconds), not per read: over a multi handle nothing
else would run a transfer that has gone silent (issue 19).

The same tick also lets libcurl look at every transfer once (``recheck``). Its event
interface runs only the transfers it marks itself (a socket it asked to watch, a
timer, buffered input it flagged); a mark it misses leaves a transfer whose response
is already in waiting for its next timer. On the WAN benchmark one 4,448-byte file
took 10.003 s in one attempt, done 3 ms after the connect timer libcurl sets for every
transfer (and never clears) expired, at a 250 ms round trip: its response was in, and
it ran only then (the miss itself was not caught again in 90 traced runs). Past that
timer a transfer has none, and the same miss would end in a read timeout. curl's own
``--parallel`` calls ``curl_multi_perform``, which runs every transfer on each
wake-up (issue 27; tests/test_lost_wakeup.py).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pycurl

from fetcher.transports.curl.easy import CurlTransport
from fetcher.transports.environment import Environment
from fetcher.transports.factory import curl_transport

if TYPE_CHECKING:
    from fetcher.options import Options
    from fetcher.transports.base import Receiver, Request

T = TypeVar("T")
MAX_TICK_S = 1.0  # what perform() gives the progress callback: once a second at least


class CurlTransfers(Generic[T]):
    """Up to ``size`` transfers at once on one ``CurlMulti``.

    Args:
        options: the run's options, for the easy handles.
        on_socket, on_timer: libcurl's socket and timer callbacks, the driver's.
        size: how many easy handles (the pool).
    """

    def __init__(self, options: Options, on_socket: Callable[..., Any], on_timer: Callable[[int], Any],
                 size: int) -> None:
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, on_socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, on_timer)
        environment = Environment.read(options.transport.proxy)  # once, not once per handle
        self._free: list[CurlTransport] = [curl_transport(options, environment, driven=True) for _ in range(size)]
        self._active: dict[pycurl.Curl, tuple[CurlTransport, T]] = {}
        # A fifth of the shortest window: a silence is seen at most that late.
        self.tick = max(0.05, min(MAX_TICK_S, options.rules.read_timeout / 5,
                                  options.rules.min_speed_time / 5 if options.rules.min_speed else MAX_TICK_S))
        self._next_check = time.monotonic() + self.tick

    @property
    def free(self) -> int:
        """Easy handles not transferring."""
        return len(self._free)

    @property
    def active(self) -> int:
        return len(self._active)

    def start(self, request: Request, receiver: Receiver, token: T) -> None:
        """Start ``request`` on a free handle (libcurl's timer then asks to be run); needs ``free``."""
        transport = self._free.pop()
        transport.start(request, receiver)
        self.multi.add_handle(transport.curl)
        self._active[transport.curl] = (transport, token)

    def socket_action(self, fd: int, flags: int) -> None:
        """Let libcurl move the transfers on ``fd`` (``flags``: ``sockets.curl_flags``)."""
        self.multi.socket_action(fd, flags)

    def on_timeout(self) -> None:
        """libcurl's timer has expired: let it run what was waiting on time."""
        self.multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)

    def ended(self) -> Iterator[tuple[T, CurlTransport, int, str]]:
        """Every transfer libcurl reports over: its token, its transport and libcurl's code and message,
        for the caller to call ``transport.finish(code, message)`` (once) before taking the next."""
        multi, active, free = self.multi, self._active, self._free
        for curl, code, message in ended_transfers(multi):
            multi.remove_handle(curl)
            transport, token = active.pop(curl)
            try:
                yield token, transport, code, message
            finally:
                free.append(transport)

    @property
    def next_check(self) -> float:
        """The monotonic time ``overdue`` next has work: a driver wakes up by then."""
        return self._next_check

    def overdue(self) -> Iterator[tuple[T, CurlTransport, int, str]]:
        """When a tick is due, every transfer past a deadline, stopped, as ``ended`` hands them out
        (its ``finish`` raises the guard's failure)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.tick
        self.recheck()
        for curl, (transport, token) in list(self._active.items()):
            failure = transport.overdue(now)
            if failure is None:
                continue
            self.multi.remove_handle(curl)
            del self._active[curl]
            transport.abort(failure)
            try:
                yield token, transport, pycurl.E_ABORTED_BY_CALLBACK, ""
            finally:
                self._free.append(transport)

    def recheck(self) -> None:
        """Let libcurl move every transfer in flight, whatever it marked (``curl_multi_socket_all``).

        Deprecated by libcurl "for performance reasons" (it runs every transfer, not the ready
        ones) and kept in its API; once a tick it costs little, and it is the call that
        re-checks every transfer and socket libcurl has (``curl_multi_perform`` runs them too
        but leaves the socket callbacks unsaid). pycurl warns on each call. What it ends,
        ``ended`` hands out.
        """
        if self._active:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.multi.socket_all()

    def stop_all(self) -> list[T]:
        """Stop every transfer in flight now; return their tokens, for the caller to settle."""
        tokens = []
        for curl, (transport, token) in list(self._active.items()):
            self.multi.remove_handle(curl)
            tokens.append(token)
            self._free.append(transport)
        self._active.clear()
        return tokens

    def close(self) -> None:
        for transport in self._free:
            transport.close()
        self.multi.close()


def ended_transfers(multi: pycurl.CurlMulti) -> Iterator[tuple[pycurl.Curl, int, str]]:
    """Every transfer ``multi`` reports over: (easy handle, libcurl's code (0: done), message)."""
    while True:
        queued, ended, errors = multi.info_read()
        for curl in ended:
            yield curl, 0, ""
        yield from errors
        if not queued:
            return
