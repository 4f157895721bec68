"""The downloads of one libcurl multi handle: tasks in, transfers through libcurl, Results out.

What the multi backend and the gevent backend's ``--client curl`` share. Neither
runs a thread or a greenlet per download: ``submit`` starts a transfer on a free
easy handle (one per pool slot, each a ``CurlTransport``), libcurl moves every
transfer when its driver calls ``socket_action``, and ``settle_ended`` turns the
transfers libcurl reports over into Results. The driver decides only how to
wait for sockets and for libcurl's timer: epoll in the multi backend, gevent's
own loop under gevent (gevent_curl.py).

Every rule is the same code as on the other backends: ``download.prepare`` and
``Download`` around the same ``CurlTransport``. libcurl watches ``--max-time``
and the connect timeout itself; the read timeout (silence) and ``--min-speed``
are the guard's, asked by ``check_deadlines`` on the driver's tick (every
``tick`` seconds), not per read: over a multi handle nothing else would run a
transfer that has gone silent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import time

import pycurl

from fetcher.backends.base import internal_failure
from fetcher.download import Download, prepare
from fetcher.guards import FetchFailure
from fetcher.models import Result, Task
from fetcher.session import curl_transport
from fetcher.streaming import Cancelled
from fetcher.transports.base import Head
from fetcher.transports.curl import CurlTransport, ended_transfers
from fetcher.transports.environment import Environment

if TYPE_CHECKING:
    from fetcher.options import Options
    from fetcher.streaming import CancelFlag

MAX_TICK_S = 1.0  # what perform() gives the progress callback: once a second at least


class CurlTransfers:
    """Up to ``options.pool`` downloads at once on one ``CurlMulti``.

    Args:
        options: the run's options; ``pool`` easy handles are made.
        on_socket, on_timer: libcurl's socket and timer callbacks, the driver's.
        cancel: the flag every download checks between chunks.
    """

    def __init__(self, options: Options, on_socket: Callable[..., Any], on_timer: Callable[[int], Any],
                 cancel: CancelFlag | None = None) -> None:
        self.options, self.cancel = options, cancel
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, on_socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, on_timer)
        environment = Environment.read()  # once, not once per handle
        self._free: list[CurlTransport] = [curl_transport(options, environment, driven=True)
                                           for _ in range(options.pool)]
        # A fifth of the shortest window: a silence is seen at most that late.
        self.tick = max(0.05, min(MAX_TICK_S, options.read_timeout / 5,
                                  options.min_speed_time / 5 if options.min_speed else MAX_TICK_S))
        self._next_check = time.monotonic() + self.tick
        self._active: dict[pycurl.Curl, tuple[CurlTransport, Download]] = {}
        self._pending: deque[Task] = deque()
        self.done: list[Result] = []  # settled, not yet handed back by the driver

    @property
    def busy(self) -> bool:
        """Some task is queued or transferring."""
        return bool(self._active or self._pending)

    def submit(self, task: Task) -> None:
        self._pending.append(task)
        self.start_pending()

    def start_pending(self) -> None:
        """Start queued tasks while easy handles are free (libcurl's timer then asks to be run)."""
        while self._pending and self._free:
            task = self._pending.popleft()
            download = _settled(task, partial(prepare, task, self.options, self.cancel))
            if isinstance(download, Result):  # decided before any request (a bad name, a kept file)
                self.done.append(download)
                continue
            transport = self._free.pop()
            transport.start(download.request(), download)
            self.multi.add_handle(transport.curl)
            self._active[transport.curl] = (transport, download)

    def settle_ended(self) -> None:
        """Settle every transfer libcurl reports over (after ``socket_action``), then start queued tasks."""
        for curl, code, message in ended_transfers(self.multi):
            self.multi.remove_handle(curl)
            transport, download = self._active.pop(curl)
            result = _settled(download.task, partial(download.settle, partial(transport.finish, code, message)))
            assert isinstance(result, Result), "settle() returns a Result"
            self.done.append(result)
            self._free.append(transport)
        self.start_pending()

    @property
    def next_check(self) -> float:
        """The monotonic time ``check_deadlines`` next has work: a driver wakes up by then."""
        return self._next_check

    def check_deadlines(self) -> None:
        """When a tick is due, end every transfer past a deadline (its Result goes to ``done``)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.tick
        for curl, (transport, _download) in list(self._active.items()):
            failure = transport.overdue(now)
            if failure is not None:
                self._end(curl, failure)

    def _end(self, curl: pycurl.Curl, failure: FetchFailure) -> None:
        """Stop one transfer now; it is settled as libcurl's own aborts are."""
        self.multi.remove_handle(curl)
        transport, download = self._active.pop(curl)
        transport.abort(failure)
        result = _settled(download.task, partial(download.settle, partial(transport.finish,
                                                                          pycurl.E_ABORTED_BY_CALLBACK, "")))
        assert isinstance(result, Result), "settle() returns a Result"
        self.done.append(result)
        self._free.append(transport)

    def cancel_all(self) -> None:
        """Drop queued tasks; stop every transfer now, its ``.part`` removed unless resumable."""
        self._pending.clear()
        self._end_all(_cancelled, report=False)

    def fail_all(self, error: Exception) -> None:
        """libcurl itself failed (not one transfer): every transfer ends as an ``internal`` Result."""
        def fail() -> Head:
            raise error

        self._end_all(fail, report=True)

    def _end_all(self, ending: Callable[[], Head], report: bool) -> None:
        """End every transfer in flight as ``ending`` says (it raises); keep the Results if ``report``."""
        for curl, (transport, download) in list(self._active.items()):
            self.multi.remove_handle(curl)
            result = _settled(download.task, partial(download.settle, ending))
            if report:
                assert isinstance(result, Result), "settle() returns a Result"
                self.done.append(result)
            self._free.append(transport)
        self._active.clear()

    def close(self) -> None:
        for transport in self._free:
            transport.close()
        self.multi.close()


def _cancelled() -> Head:
    raise Cancelled()


def _settled(task: Task, step: Callable[[], Result | Download]) -> Result | Download:
    """``step()``, with ``run_task``'s safety net: a bug becomes an ``internal`` Result, not a stopped run."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - one URL's bug must not stop the others
        return internal_failure(task, exc)
