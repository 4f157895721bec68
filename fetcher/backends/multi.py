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
watch as they change, an epoll selector waits on them, and each wake-up costs
work for the sockets that are ready rather than for every transfer in flight.
``fdset`` also silently leaves out descriptors above 1,023, which a pool of a
thousand reaches, so those transfers would only move on timeouts.

Every rule is the same code as on the other backends: ``download.prepare``
and ``Download`` around the same ``CurlTransport``. Needs ``--client curl``.
"""

from __future__ import annotations

import selectors
import time
import traceback
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import pycurl

from fetcher.backends.base import Backend
from fetcher.download import Download, prepare
from fetcher.errors import BackendError
from fetcher.models import ErrorKind, Result, Task, failed
from fetcher.session import make_session
from fetcher.streaming import Cancelled
from fetcher.transports.base import Head
from fetcher.transports.curl import CurlTransport

if TYPE_CHECKING:
    from fetcher.streaming import CancelFlag

IDLE_POLL_S = 1.0  # longest wait when libcurl has no timer of its own
_WAKE, _SOCKET = "wake", "socket"  # what a registered descriptor is, in the selector's key.data


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
        self._multi = pycurl.CurlMulti()
        self._selector = selectors.DefaultSelector()  # epoll on Linux
        self._timer_at: float | None = None  # when libcurl wants socket_action(SOCKET_TIMEOUT)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        for fd in self.wake_fds:
            self._selector.register(fd, selectors.EVENT_READ, _WAKE)
        self._free: list[CurlTransport] = [make_session(self.options) for _ in range(self.options.pool)]  # type: ignore[misc]
        self._active: dict[pycurl.Curl, tuple[CurlTransport, Download]] = {}
        self._pending: deque[Task] = deque()
        self._done: list[Result] = []

    def submit(self, task: Task) -> None:
        self._pending.append(task)
        self._start_pending()

    def wait(self, timeout: float | None) -> list[Result]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._drive()
            if self._done:
                done, self._done = self._done, []
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
        for key, mask in self._selector.select(timeout):
            if key.data is _WAKE:
                woken = True
                continue
            flags = ((pycurl.CSELECT_IN if mask & selectors.EVENT_READ else 0)
                     | (pycurl.CSELECT_OUT if mask & selectors.EVENT_WRITE else 0))
            self._multi.socket_action(key.fd, flags)
        return woken

    def _on_socket(self, what: int, fd: int, _multi: object, _data: object) -> None:
        """libcurl's socket callback: start, change or stop watching ``fd``."""
        if what == pycurl.POLL_REMOVE:
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass
            return
        events = ((selectors.EVENT_READ if what & pycurl.POLL_IN else 0)
                  | (selectors.EVENT_WRITE if what & pycurl.POLL_OUT else 0))
        try:
            self._selector.modify(fd, events, _SOCKET)
        except KeyError:
            self._selector.register(fd, events, _SOCKET)

    def _on_timer(self, timeout_ms: int) -> None:
        """libcurl's timer callback: call socket_action(SOCKET_TIMEOUT) in ``timeout_ms`` (-1: never)."""
        self._timer_at = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            self._pending.clear()
            for curl, (transport, download) in list(self._active.items()):
                self._multi.remove_handle(curl)
                _settled(download.task, partial(download.settle, _cancelled))  # removes its .part
                self._free.append(transport)
            self._active.clear()
        while self._active or self._pending:  # let queued work finish, as the thread backend does
            self.wait(IDLE_POLL_S)
        for transport in self._free:
            transport.close()
        self._multi.close()
        self._selector.close()

    def _start_pending(self) -> None:
        while self._pending and self._free:
            task = self._pending.popleft()
            download = _settled(task, partial(prepare, task, self.options, self.cancel))
            if isinstance(download, Result):  # decided before any request (a bad name, a kept file)
                self._done.append(download)
                continue
            transport = self._free.pop()
            transport.start(download.request(), download)
            self._multi.add_handle(transport.curl)
            self._active[transport.curl] = (transport, download)

    def _drive(self) -> None:
        """Run libcurl's due timer; settle the transfers that ended; start pending ones."""
        if self._timer_at is not None and self._timer_at <= time.monotonic():
            self._timer_at = None
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
        while True:
            queued, ended, errors = self._multi.info_read()
            for curl in ended:
                self._complete(curl, 0, "")
            for curl, code, message in errors:
                self._complete(curl, code, message)
            if not queued:
                break
        self._start_pending()

    def _complete(self, curl: pycurl.Curl, code: int, message: str) -> None:
        self._multi.remove_handle(curl)
        transport, download = self._active.pop(curl)
        result = _settled(download.task, partial(download.settle, partial(transport.finish, code, message)))
        assert isinstance(result, Result), "settle() returns a Result"
        self._done.append(result)
        self._free.append(transport)


def _cancelled() -> Head:
    raise Cancelled()


def _settled(task: Task, step: Callable[[], Result | Download]) -> Result | Download:
    """``step()``, with ``run_task``'s safety net: a bug becomes an ``internal`` Result, not a stopped run."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - one URL's bug must not stop the others
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return failed(task, ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})")
