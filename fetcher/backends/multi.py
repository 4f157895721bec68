"""The multi backend: libcurl's multi interface runs every transfer from the engine's own thread.

No worker threads at all. ``submit`` starts a transfer on a free easy handle
(one per pool slot, each a ``CurlTransport``); ``wait`` lets libcurl move all
of them forward and hands back the finished ones. Python runs only in the
callbacks, on the same thread as the scheduler, so nothing ever waits for the
GIL and no result crosses a thread. Measured on 5,000 small files (issue 8):
one thread driving 8 transfers fetched about twice the files per second of 8
threads with an easy handle each, whose callbacks and hand-offs queue for the GIL.

The loop uses libcurl's socket interface (``socket_action`` with socket and
timer callbacks), not ``perform`` with ``fdset``: libcurl says which sockets to
watch as they change, epoll waits on them, and each wake-up costs
work for the sockets that are ready rather than for every transfer in flight.
``fdset`` also silently leaves out descriptors above 1,023, which a pool of a
thousand reaches, so those transfers would only move on timeouts.

The downloads themselves (easy handles, tasks, Results) are ``CurlTransfers``
(curl_transfers.py), which the gevent backend's ``--client curl`` drives from
gevent's loop instead. Needs ``--client curl``.
"""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING

import pycurl

from fetcher.backends.base import Backend
from fetcher.backends.curl_transfers import CurlTransfers
from fetcher.errors import BackendError
from fetcher.models import Result, Task

if TYPE_CHECKING:
    from fetcher.streaming import CancelFlag

IDLE_POLL_S = 1.0  # longest wait when libcurl has no timer of its own
# Sockets handed to libcurl per wake-up before the finished transfers go back to the engine
# and their slots get new URLs. Unbounded, a burst of a thousand responses was all read and
# settled before the first next request went out: at pool 1,000 and 200 ms per response,
# 16 took the steady state from 78-80% to 86-88% of pool ÷ delay. epoll hands the rest out
# on the next calls, in turn (a reported socket goes to the back of its ready list), so no
# socket starves.
EVENTS_PER_WAKE = 16
_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR  # a hang-up or error is for libcurl to read


class _Poller:
    """epoll where the platform has it, else poll(): the same calls, no FD_SETSIZE limit.

    Raw, not ``selectors``: libcurl changes what it watches on almost every
    request, and the selectors layer costs several Python calls per change.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._poll = select.poll() if self._epoll is None else None
        self._watched: set[int] = set()

    def register(self, fd: int, events: int) -> None:
        self.watch(fd, events)

    def watch(self, fd: int, events: int) -> None:
        poller = self._epoll or self._poll
        assert poller is not None
        if fd in self._watched:
            try:
                poller.modify(fd, events)
                return
            except FileNotFoundError:  # closed and reused since: epoll dropped the old one
                pass
        poller.register(fd, events)
        self._watched.add(fd)

    def unregister(self, fd: int) -> None:
        if fd in self._watched:
            self._watched.discard(fd)
            try:
                (self._epoll or self._poll).unregister(fd)  # type: ignore[union-attr]
            except (OSError, KeyError):  # already closed: epoll forgot it by itself
                pass

    def poll(self, timeout_s: float) -> list[tuple[int, int]]:
        if self._epoll is not None:
            return self._epoll.poll(timeout_s, EVENTS_PER_WAKE)
        # poll() lists by descriptor: a cap would serve the lowest ones first every time.
        return self._poll.poll(timeout_s * 1000)  # type: ignore[union-attr]

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


class MultiBackend(Backend):
    """Attributes set before entering, for a host that drives this backend (a process-backend worker):

    - ``wake_fds``: file descriptors that end a ``wait`` early when readable
      (the worker's pipe to its parent), so new tasks never wait for a timeout.
    - ``cancel``: a flag every download checks between chunks.
    """

    name = "multi"
    wake_fds: tuple[int, ...] = ()
    cancel: CancelFlag | None = None

    def _start(self) -> None:
        if self.session_factory is not None:
            raise BackendError("the multi backend makes its own libcurl handles: it takes no session_factory")
        if self.options.client != "curl":
            raise BackendError("the multi backend drives libcurl's multi interface: use it with --client curl")
        self._poller = _Poller()
        self._timer_at: float | None = None  # when libcurl wants socket_action(SOCKET_TIMEOUT)
        for fd in self.wake_fds:
            self._poller.register(fd, select.POLLIN)
        self._transfers = CurlTransfers(self.options, self._on_socket, self._on_timer, self.cancel)

    def submit(self, task: Task) -> None:
        self._transfers.submit(task)

    def wait(self, timeout: float | None) -> list[Result]:
        deadline = None if timeout is None else time.monotonic() + timeout
        transfers = self._transfers
        while True:
            self._drive()
            if transfers.done:
                done, transfers.done = transfers.done, []
                return done
            remaining = IDLE_POLL_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return []
            if self._sleep(remaining):
                return []  # a wake fd is readable: the host has something to say

    def _sleep(self, remaining: float) -> bool:
        """Wait for a watched socket, libcurl's timer or ``remaining`` s, and hand libcurl what is ready.

        True if a wake fd is readable.
        """
        timeout = remaining
        if self._timer_at is not None:
            timeout = min(timeout, max(0.0, self._timer_at - time.monotonic()))
        woken = False
        wake_fds = self.wake_fds
        multi = self._transfers.multi
        for fd, events in self._poller.poll(timeout):
            if fd in wake_fds:
                woken = True
                continue
            flags = ((pycurl.CSELECT_IN if events & _READABLE else 0)
                     | (pycurl.CSELECT_OUT if events & select.POLLOUT else 0)
                     | (pycurl.CSELECT_ERR if events & select.POLLERR else 0))
            multi.socket_action(fd, flags)
        return woken

    def _on_socket(self, what: int, fd: int, _multi: object, _data: object) -> None:
        """libcurl's socket callback: start, change or stop watching ``fd``."""
        if what == pycurl.POLL_REMOVE:
            self._poller.unregister(fd)
        else:
            self._poller.watch(fd, (select.POLLIN if what & pycurl.POLL_IN else 0)
                               | (select.POLLOUT if what & pycurl.POLL_OUT else 0))

    def _on_timer(self, timeout_ms: int) -> None:
        """libcurl's timer callback: call socket_action(SOCKET_TIMEOUT) in ``timeout_ms`` (-1: never)."""
        self._timer_at = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            self._transfers.cancel_all()
        while self._transfers.busy:  # let queued work finish, as the thread backend does
            self.wait(IDLE_POLL_S)
        self._transfers.close()
        self._poller.close()

    def _drive(self) -> None:
        """Run libcurl's due timer; settle the transfers that ended; start pending ones."""
        if self._timer_at is not None and self._timer_at <= time.monotonic():
            self._timer_at = None
            self._transfers.multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
        self._transfers.settle_ended()
