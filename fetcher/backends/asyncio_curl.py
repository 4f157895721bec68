"""libcurl's multi handle on the caller's running asyncio loop: the backend of ``AsyncFetcher``.

The downloads are the multi backend's (``MultiDownloads``: an easy handle per pool
slot, tasks in, Results out, every rule the same code); only the waiting differs,
as under gevent (gevent_curl.py). libcurl says which sockets to watch and when
it wants to be called back; its socket callback becomes ``loop.add_reader`` /
``add_writer`` / ``remove_*``, its timer callback one ``loop.call_later``, and
each of the loop's callbacks calls ``socket_action``, settles what ended and
wakes the engine's driver (run/aio_driver.py) when Results are waiting. This is
how Tornado's ``curl_httpclient`` drove pycurl from its IOLoop.

No thread, no loop of its own, no task or future per download: the loop's own
selector (or uvloop's libuv) watches libcurl's sockets beside the application's.
It needs a loop with ``add_reader`` (the default loop on Unix, uvloop; not
Windows' proactor loop). Name resolution is libcurl's threaded resolver, so a
slow DNS answer never stalls the loop.

``wait`` never blocks: the engine runs pausing (``engine.Pause``) and asks only
once the driver has waited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from fetcher.backends.base import Backend, SessionFactory
from fetcher.backends.multi import MultiDownloads
from fetcher.transports.curl.sockets import ready_flags, wanted

if TYPE_CHECKING:
    from fetcher.models import FetchTask, Result
    from fetcher.options import Options


class LoopCurlBackend(Backend):
    """``MultiDownloads`` driven by ``loop``; ``wake()`` is called when Results wait to be taken.

    Every method, and every callback, runs on the loop's thread.
    """

    name = "asyncio"

    def __init__(self, options: Options, session_factory: SessionFactory | None = None, *,
                 loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        super().__init__(options, session_factory)
        self._loop, self._wake = loop, wake
        self._watched: dict[int, tuple[bool, bool]] = {}  # fd -> (reading, writing)
        self._timer: asyncio.TimerHandle | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._closed = False

    def _start(self) -> None:
        # No session_factory check here: AsyncFetcher's options name the multi backend, whose
        # check() refused one before the run began.
        self._downloads = MultiDownloads(self.options, self._on_socket, self._on_timer)
        self._tick = self._loop.call_later(self._downloads.transfers.tick, self._on_tick)

    def submit(self, task: FetchTask) -> None:
        self._downloads.submit(task)
        if self._downloads.done:  # decided before any request (a bad name, a kept file)
            self._wake()

    def wait(self, timeout: float | None) -> list[Result]:
        """What has ended; never blocks (the driver waited before the engine asked)."""
        return self._downloads.take_done()

    def shutdown(self, cancel: bool = False) -> None:
        downloads = self._downloads
        # The engine ends a run only with nothing in flight; anything still busy here (the run
        # raised) is stopped now: this thread is the loop's, and must not wait for transfers.
        if cancel or downloads.busy:
            downloads.cancel_all()  # each .part goes unless resumable
            downloads.done.clear()
        self._closed = True
        for fd in list(self._watched):
            self._unwatch(fd)
        for handle in (self._timer, self._tick):
            if handle is not None:
                handle.cancel()
        downloads.close()

    # -- libcurl's callbacks (inside add_handle / socket_action: never call libcurl here) --------

    def _on_socket(self, what: int, fd: int, _multi: object, _data: object) -> None:
        asked = wanted(what)
        if asked is None or self._closed:
            self._unwatch(fd)
            return
        reading, writing = self._watched.get(fd, (False, False))
        if asked[0] != reading:
            if asked[0]:
                self._loop.add_reader(fd, self._on_readable, fd)
            else:
                self._loop.remove_reader(fd)
        if asked[1] != writing:
            if asked[1]:
                self._loop.add_writer(fd, self._on_writable, fd)
            else:
                self._loop.remove_writer(fd)
        self._watched[fd] = asked

    def _unwatch(self, fd: int) -> None:
        reading, writing = self._watched.pop(fd, (False, False))
        if reading:
            self._loop.remove_reader(fd)
        if writing:
            self._loop.remove_writer(fd)

    def _on_timer(self, timeout_ms: int) -> None:
        """libcurl wants ``socket_action(SOCKET_TIMEOUT)`` in ``timeout_ms`` (-1: never): one timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout_ms >= 0 and not self._closed:
            self._timer = self._loop.call_later(timeout_ms / 1000, self._on_timeout)

    # -- the loop's callbacks ------------------------------------------------------------------

    def _on_readable(self, fd: int) -> None:
        self._act(fd, ready_flags(True, False))

    def _on_writable(self, fd: int) -> None:
        self._act(fd, ready_flags(False, True))

    def _on_timeout(self) -> None:
        self._timer = None
        self._act(None, 0)

    def _on_tick(self) -> None:
        """The deadline tick: ``settle_ended`` also ends the transfers past a deadline."""
        self._tick = self._loop.call_later(self._downloads.transfers.tick, self._on_tick)
        self._act(-1, 0)

    def _act(self, fd: int | None, flags: int) -> None:
        """Let libcurl move on ``fd`` (None: its timer expired; -1: nothing, the tick), settle what
        ended, and wake the driver if Results wait."""
        if self._closed:
            return
        downloads = self._downloads
        try:
            if fd is None:
                downloads.transfers.on_timeout()
            elif fd >= 0:
                downloads.transfers.socket_action(fd, flags)
            downloads.settle_ended()
        except Exception as exc:  # noqa: BLE001 - on the loop it would only be logged: the Results say it
            downloads.fail_all(exc)
        if downloads.done:
            self._wake()
