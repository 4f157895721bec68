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
watch as they change, epoll waits on them (curl_sockets.py, at most 16 ready
ones per wake-up), and each wake-up costs work for the sockets that are ready
rather than for every transfer in flight.
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

from fetcher.backends.base import Backend, SessionFactory
from fetcher.backends.curl_sockets import SocketPoller, curl_flags
from fetcher.backends.curl_transfers import CurlTransfers
from fetcher.errors import BackendError
from fetcher.models import Result, Task
from fetcher.session import refuse_blocking_curl

if TYPE_CHECKING:
    from fetcher.options import Options
    from fetcher.streaming import CancelFlag

IDLE_POLL_S = 1.0  # longest wait when libcurl has no timer of its own


class MultiBackend(Backend):
    """Attributes set before entering, for a host that drives this backend (a process-backend worker):

    - ``wake_fds``: file descriptors that end a ``wait`` early when readable
      (the worker's pipe to its parent), so new tasks never wait for a timeout.
    - ``cancel``: a flag every download checks between chunks.
    """

    name = "multi"
    wake_fds: tuple[int, ...] = ()
    cancel: CancelFlag | None = None

    @classmethod
    def check(cls, options: Options, session_factory: SessionFactory | None = None) -> None:
        if session_factory is not None:
            raise BackendError("the multi backend makes its own libcurl handles: it takes no session_factory")
        if options.client != "curl":
            raise BackendError("the multi backend drives libcurl's multi interface: use it with --client curl")

    def _start(self) -> None:
        self.check(self.options, self.session_factory)
        refuse_blocking_curl()  # its epoll wait would stall every greenlet
        self._poller = SocketPoller()
        self._timer_at: float | None = None  # when libcurl wants socket_action(SOCKET_TIMEOUT)
        for fd in self.wake_fds:
            self._poller.watch(fd, select.POLLIN)
        self._transfers = CurlTransfers(self.options, self._poller.on_socket, self._on_timer, self.cancel)

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
            multi.socket_action(fd, curl_flags(events))
        return woken

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
