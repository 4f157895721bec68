"""The multi backend: libcurl's multi interface runs every transfer from the engine's own thread.

No worker threads at all. ``submit`` starts a transfer on a free easy handle
(one per pool slot, each a ``CurlTransport``); ``wait`` lets libcurl move all
of them forward and hands back the finished ones. Python runs only in the
callbacks, on the same thread as the scheduler, so nothing ever waits for the
GIL and no result crosses a thread. Measured on 5,000 small files (issue 8):
one thread driving 8 transfers fetched about twice the files per second of 8
threads with an easy handle each, whose callbacks and hand-offs queue for the GIL.

Every rule is the same code as on the other backends: ``download.prepare``
and ``Download`` around the same ``CurlTransport``. Needs ``--client curl``.
"""

from __future__ import annotations

import select
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

IDLE_POLL_S = 1.0  # longest select() when libcurl has no timer of its own


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
        """Block until libcurl has work, its next timer, or ``remaining`` s; True if a wake fd woke us."""
        if not self._active and not self.wake_fds:  # nothing in flight: the engine waits for a retry's time
            time.sleep(remaining)
            return False
        suggested = self._multi.timeout()  # ms until libcurl's next timer; -1: none
        timeout = min(remaining, suggested / 1000 if suggested >= 0 else IDLE_POLL_S)
        if not self.wake_fds:
            self._multi.select(timeout)
            return False
        # poll, not select: no FD_SETSIZE limit on a big pool's descriptors
        poller = select.poll()
        reads, writes, _ = self._multi.fdset() if self._active else ([], [], [])
        for fd in {*reads, *writes}:
            poller.register(fd, (select.POLLIN if fd in reads else 0) | (select.POLLOUT if fd in writes else 0))
        for fd in self.wake_fds:
            poller.register(fd, select.POLLIN)
        ready = poller.poll(timeout * 1000)
        return any(fd in self.wake_fds for fd, _ in ready)

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
        """Let libcurl do what it can without blocking; settle the transfers that ended."""
        while self._multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
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
