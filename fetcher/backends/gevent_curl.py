"""The gevent backend with libcurl (``--backend gevent --client curl``): one multi handle on gevent's loop.

There are no worker greenlets: libcurl must never block the event loop, so
nothing calls ``perform``. The downloads are the multi backend's
(``MultiDownloads``: an easy handle per pool slot, tasks in, Results out); only
the waiting differs. libcurl says which
sockets to watch and when it wants to be called back (its socket and timer
callbacks), and gevent's own loop watches them and keeps the timer; its
callbacks let libcurl move and settle what it reports over. On Linux the
sockets go into one epoll set (transports/curl/sockets.py) and the hub watches that set's
own descriptor: one io watcher however many connections, and at most 16
sockets served per turn of the loop, in turn, so the Results of the first
go back (and their slots get new URLs) before the rest of a burst is read.
Elsewhere each socket gets its own io watcher.
So other greenlets (an application's crawl logic, say) run whenever the
transfers wait, and no greenlet is switched to per download: with a greenlet
waiting on each transfer, the wake-ups and hand-offs cost about a fifth more
CPU per small file than the multi backend (issue 8). The receiver's callbacks
(caps, checks, the file) and each download's settling run on the hub, and
never switch. Name resolution is libcurl's threaded resolver (pycurl's wheels
are built with it), so a slow DNS answer does not stall the loop either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.monkey import get_original

from fetcher.backends.base import SessionFactory
from fetcher.backends.gevent import KILL_TIMEOUT_S, GeventHubBackend
from fetcher.backends.multi import MultiDownloads
from fetcher.errors import BackendError
from fetcher.transports.curl.sockets import SocketPoller, curl_flags, ready_flags, wanted

if TYPE_CHECKING:
    from fetcher.download.guards import CancelFlag
    from fetcher.models import Result, FetchTask
    from fetcher.options import Options

_READ, _WRITE = 1, 2  # libev's EV_READ and EV_WRITE, as gevent's loop.io takes them


def unpatched_epoll() -> Callable[[], Any] | None:
    """``select.epoll`` as it was before monkey-patching (which removes it), or None without one."""
    try:
        epoll: Callable[[], Any] = get_original("select", "epoll")
    except AttributeError:
        return None
    return epoll


class GeventCurlBackend(GeventHubBackend):
    """Downloads on a ``CurlHub``: libcurl's transfers, driven by gevent's loop."""

    @classmethod
    def check(cls, options: Options, session_factory: SessionFactory | None = None) -> None:
        super().check(options, session_factory)
        if session_factory is not None:
            raise BackendError("--client curl makes its own libcurl handles: it takes no session_factory")

    def _start_work(self) -> None:
        self._hub = CurlHub(self.options, self._deliver, self._cancel)

    def submit(self, task: FetchTask) -> None:
        self._hub.submit(task)

    def _stop_work(self, cancel: bool) -> None:
        hub = self._hub
        if cancel:
            hub.cancel()  # every transfer stops now; each .part goes unless resumable
        else:
            while hub.busy:  # let queued work finish, as the thread backend does
                self.wait(KILL_TIMEOUT_S)
        hub.close()


class CurlHub:
    """``MultiDownloads`` driven by the current gevent hub; each Result goes to ``deliver``.

    ``submit`` is called from any greenlet; everything else runs on the hub.
    Without epoll (``unpatched_epoll()`` is None) each socket gets its own io watcher.
    """

    def __init__(self, options: Options, deliver: Callable[[Result], None], cancel: CancelFlag | None = None) -> None:
        self._loop = gevent.get_hub().loop
        self._deliver = deliver
        self._watchers: dict[int, Any] = {}  # fd -> gevent io watcher, without epoll
        self._timer: Any = None
        self._sockets: SocketPoller | None = None
        on_socket = self._on_socket
        if (epoll := unpatched_epoll()) is not None:
            self._sockets = SocketPoller(epoll)
            on_socket = self._sockets.on_socket
            self._ready = self._loop.io(self._sockets.fileno(), _READ)
            self._ready.start(self._on_ready)
        self._downloads = MultiDownloads(options, on_socket, self._on_timer, cancel)

    @property
    def busy(self) -> bool:
        return self._downloads.busy

    def submit(self, task: FetchTask) -> None:
        self._downloads.submit(task)
        self._hand_back()  # a task decided before any request (a bad name, a kept file)

    def cancel(self) -> None:
        """Stop every transfer now (their ``.part`` removed unless resumable), and drop queued tasks."""
        self._downloads.cancel_all()
        self._downloads.done.clear()

    def close(self) -> None:
        for watcher in self._watchers.values():
            watcher.stop()
        self._watchers.clear()
        if self._timer is not None:
            self._timer.stop()
        if self._sockets is not None:
            self._ready.stop()
            self._sockets.close()
        self._downloads.close()

    def _hand_back(self) -> None:
        if self._downloads.done:
            for result in self._downloads.take_done():
                self._deliver(result)

    # -- libcurl's callbacks (inside add_handle / socket_action: never switch) ----------

    def _on_socket(self, what: int, fd: int, _multi: object, _data: object) -> None:
        """Without epoll: an io watcher per socket."""
        watcher = self._watchers.get(fd)
        asked = wanted(what)
        if asked is None:
            if watcher is not None:
                watcher.stop()
                del self._watchers[fd]
            return
        events = (_READ if asked[0] else 0) | (_WRITE if asked[1] else 0)
        if watcher is None:
            watcher = self._watchers[fd] = self._loop.io(fd, events)
        else:  # the same socket, now waiting for something else: re-arm, no new watcher
            watcher.stop()
            watcher.events = events
        watcher.start(self._on_io, fd, pass_events=True)

    def _on_timer(self, timeout_ms: int) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if timeout_ms >= 0:
            self._timer = self._loop.timer(timeout_ms / 1000)
            self._timer.start(self._on_timeout)

    # -- gevent's callbacks (on the hub) ------------------------------------------------

    def _on_ready(self) -> None:
        """The epoll set has ready sockets: serve up to 16 (it stays readable while more wait)."""
        self._act([(fd, curl_flags(events)) for fd, events in self._sockets.poll(0)])  # type: ignore[union-attr]

    def _on_io(self, events: int, fd: int) -> None:
        self._act([(fd, ready_flags(bool(events & _READ), bool(events & _WRITE)))])

    def _on_timeout(self) -> None:
        self._timer = None
        self._act([])

    def _act(self, actions: list[tuple[int, int]]) -> None:
        """Let libcurl move on these ``(socket, CSELECT flags)`` (none: its timer expired), settle
        what ended, hand the Results back."""
        transfers = self._downloads.transfers
        try:
            if actions:
                for fd, flags in actions:
                    transfers.socket_action(fd, flags)
            else:
                transfers.on_timeout()
            self._downloads.settle_ended()
        except Exception as exc:  # noqa: BLE001 - on the hub, an exception would only be printed
            self._downloads.fail_all(exc)
        self._hand_back()
