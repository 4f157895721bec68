"""The multi backend (``--backend multi --client curl``): libcurl's multi interface runs every
transfer from the engine's own thread.

No worker threads at all. ``submit`` starts a transfer on a free easy handle
(one per pool slot); ``wait`` lets libcurl move all of them forward and hands
back the finished ones. Python runs only in the callbacks, on the same thread
as the scheduler, so nothing ever waits for the GIL and no result crosses a
thread. Measured on 5,000 small files (issue 8): one thread driving 8
transfers fetched about twice the files per second of 8 threads with an easy
handle each, whose callbacks and hand-offs queue for the GIL.

The loop uses libcurl's socket interface (``socket_action`` with socket and
timer callbacks), not ``perform`` with ``fdset``: libcurl says which sockets to
watch as they change, epoll waits on them (transports/curl/sockets.py, at most
16 ready ones per wake-up), and each wake-up costs work for the sockets that
are ready rather than for every transfer in flight. ``fdset`` also silently
leaves out descriptors above 1,023, which a pool of a thousand reaches, so
those transfers would only move on timeouts.

``MultiDownloads`` (tasks in, Results out, over ``CurlTransfers``) is shared
with the gevent backend's ``--client curl`` (gevent_curl.py), which drives it
from gevent's loop instead.
"""

from __future__ import annotations

import select
import time
from collections import deque
from collections.abc import Callable
from itertools import chain
from typing import TYPE_CHECKING, Any

from fetcher.backends.base import Backend, SessionFactory, internal_failure
from fetcher.download.attempt import Download, prepare
from fetcher.download.guards import Cancelled
from fetcher.errors import BackendError
from fetcher.models import Result, FetchTask
from fetcher.transports.curl.multi import CurlTransfers
from fetcher.transports.curl.sockets import SocketPoller, curl_flags
from fetcher.transports.factory import refuse_blocking_curl

if TYPE_CHECKING:
    from fetcher.download.guards import CancelFlag
    from fetcher.options import Options
    from fetcher.transports.base import Head

IDLE_POLL_S = 1.0  # longest wait when libcurl has no timer of its own


class MultiDownloads:
    """Up to ``options.transport.pool`` downloads at once on one ``CurlTransfers``: tasks in, Results out.

    Every rule is the same code as on the other backends: ``download.attempt.prepare``
    and ``Download`` around the same ``CurlTransport``.

    Args:
        options: the run's options.
        on_socket, on_timer: libcurl's socket and timer callbacks, the driver's.
        cancel: the flag every download checks between chunks.
    """

    def __init__(self, options: Options, on_socket: Callable[..., Any], on_timer: Callable[[int], Any],
                 cancel: CancelFlag | None = None) -> None:
        self.options, self.cancel = options, cancel
        self.transfers: CurlTransfers[Download] = CurlTransfers(options, on_socket, on_timer, options.transport.pool)
        self._pending: deque[FetchTask] = deque()
        self.done: list[Result] = []  # settled, not yet handed back by the driver

    @property
    def busy(self) -> bool:
        """Some task is queued or transferring."""
        return bool(self.transfers.active or self._pending)

    def submit(self, task: FetchTask) -> None:
        self._pending.append(task)
        self.start_pending()

    def start_pending(self) -> None:
        """Start queued tasks while easy handles are free."""
        pending, transfers = self._pending, self.transfers
        while pending and transfers.free:
            task = pending.popleft()
            download = self._prepare(task)
            if isinstance(download, Result):  # decided before any request (a bad name, a kept file)
                self.done.append(download)
                continue
            transfers.start(download.request(), download, download)

    def settle_ended(self) -> None:
        """Settle every transfer libcurl reports over (after ``socket_action``) and, when the deadline
        tick is due, every transfer past a deadline (``CurlTransfers.overdue``); then start queued tasks."""
        transfers = self.transfers
        for download, transport, code, message in chain(transfers.overdue(), transfers.ended()):
            self.done.append(self._settle(download, transport.finish, code, message))
        self.start_pending()

    def cancel_all(self) -> None:
        """Drop queued tasks; stop every transfer now, its ``.part`` removed unless resumable."""
        self._pending.clear()
        for download in self.transfers.stop_all():
            self._settle(download, _raise, Cancelled())

    def fail_all(self, error: Exception) -> None:
        """libcurl itself failed (not one transfer): every transfer ends as an ``internal`` Result."""
        for download in self.transfers.stop_all():
            self.done.append(self._settle(download, _raise, error))

    def take_done(self) -> list[Result]:
        done, self.done = self.done, []
        return done

    def close(self) -> None:
        self.transfers.close()

    # ``run_task``'s safety net, around the two steps of a download: a bug becomes an ``internal``
    # Result of its URL, not a stopped run.

    def _prepare(self, task: FetchTask) -> Download | Result:
        """``prepare``: the checks before any request, a Download to start or already a Result."""
        try:
            return prepare(task, self.options, self.cancel)
        except Exception as exc:  # noqa: BLE001 - one URL's bug must not stop the others
            return internal_failure(task, exc)

    def _settle(self, download: Download, finish: Callable[..., Head], *args: object) -> Result:
        """``download.settle(finish, *args)``: ``finish(*args)`` gives the Head or raises the failure."""
        try:
            return download.settle(finish, *args)
        except Exception as exc:  # noqa: BLE001 - one URL's bug must not stop the others
            return internal_failure(download.task, exc)


def _raise(error: BaseException) -> Head:
    """A ``finish`` for a transfer stopped from outside (cancel, libcurl failing): its failure."""
    raise error


class MultiBackend(Backend):
    """``MultiDownloads`` waited on with epoll, on the caller's thread.

    Args:
        wake_fds: file descriptors that end a ``wait`` early when readable (a
            process-backend worker's pipe to its parent), so new tasks never wait for a timeout.
        cancel: a flag every download checks between chunks (the process backend's shared one).
    """

    name = "multi"

    def __init__(self, options: Options, session_factory: SessionFactory | None = None, *,
                 wake_fds: tuple[int, ...] = (), cancel: CancelFlag | None = None) -> None:
        super().__init__(options, session_factory)
        self.wake_fds, self.cancel = wake_fds, cancel

    @classmethod
    def check(cls, options: Options, session_factory: SessionFactory | None = None) -> None:
        if session_factory is not None:
            raise BackendError("the multi backend makes its own libcurl handles: it takes no session_factory")

    def _start(self) -> None:
        self.check(self.options, self.session_factory)
        refuse_blocking_curl()  # its epoll wait would stall every greenlet
        self._poller = SocketPoller()
        self._timer_at: float | None = None  # when libcurl wants socket_action(SOCKET_TIMEOUT)
        for fd in self.wake_fds:
            self._poller.watch(fd, select.POLLIN)
        self._downloads = MultiDownloads(self.options, self._poller.on_socket, self._on_timer, self.cancel)

    def submit(self, task: FetchTask) -> None:
        self._downloads.submit(task)

    def wait(self, timeout: float | None) -> list[Result]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._drive()
            if self._downloads.done:
                return self._downloads.take_done()
            remaining = IDLE_POLL_S if deadline is None else deadline - time.monotonic()
            # At least one look at the sockets, even for timeout 0: without it, a wait(0) asked
            # again and again would never read what the transfers received (issue 19).
            woken = self._sleep(max(0.0, remaining))  # a wake fd readable: the host has something to say
            if woken or remaining <= 0:
                self._drive()
                return self._downloads.take_done()

    def _sleep(self, remaining: float) -> bool:
        """Wait for a watched socket, libcurl's timer or ``remaining`` s, and hand libcurl what is ready.

        True if a wake fd is readable.
        """
        timeout = min(remaining, max(0.0, self._downloads.transfers.next_check - time.monotonic()))
        if self._timer_at is not None:
            timeout = min(timeout, max(0.0, self._timer_at - time.monotonic()))
        woken = False
        wake_fds = self.wake_fds
        transfers = self._downloads.transfers
        for fd, events in self._poller.poll(timeout):
            if fd in wake_fds:
                woken = True
                continue
            transfers.socket_action(fd, curl_flags(events))
        return woken

    def _on_timer(self, timeout_ms: int) -> None:
        """libcurl's timer callback: call socket_action(SOCKET_TIMEOUT) in ``timeout_ms`` (-1: never)."""
        self._timer_at = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            self._downloads.cancel_all()
        while self._downloads.busy:  # let queued work finish, as the thread backend does
            self.wait(IDLE_POLL_S)
        self._downloads.close()
        self._poller.close()

    def _drive(self) -> None:
        """Run libcurl's due timer and the deadline tick; settle the transfers that ended; start pending ones."""
        if self._timer_at is not None and self._timer_at <= time.monotonic():
            self._timer_at = None
            self._downloads.transfers.on_timeout()
        self._downloads.settle_ended()  # also ends the transfers past a deadline, on the tick
