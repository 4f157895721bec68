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
from fetcher.transports.curl import CurlTransport, ended_transfers
from fetcher.transports.environment import Environment

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
        self._multi = pycurl.CurlMulti()
        self._poller = _Poller()
        self._timer_at: float | None = None  # when libcurl wants socket_action(SOCKET_TIMEOUT)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        for fd in self.wake_fds:
            self._poller.register(fd, select.POLLIN)
        environment = Environment.read()  # once, not once per handle
        self._free: list[CurlTransport] = [make_session(self.options, 1, environment)  # type: ignore[misc]
                                           for _ in range(self.options.pool)]
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
        wake_fds = self.wake_fds
        for fd, events in self._poller.poll(timeout):
            if fd in wake_fds:
                woken = True
                continue
            flags = ((pycurl.CSELECT_IN if events & _READABLE else 0)
                     | (pycurl.CSELECT_OUT if events & select.POLLOUT else 0)
                     | (pycurl.CSELECT_ERR if events & select.POLLERR else 0))
            self._multi.socket_action(fd, flags)
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
        self._poller.close()

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
        for curl, code, message in ended_transfers(self._multi):
            self._complete(curl, code, message)
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
