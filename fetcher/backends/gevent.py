"""The gevent backend (``--backend gevent``): ``pool`` greenlets sharing one Session.

One Session, not one per worker: after monkey-patching, ``threading.local`` is
per greenlet, so a session per worker would become a session per URL. Its
adapter keeps ``pool`` connections per host (``make_session(options, pool)``);
with urllib3's default of 10, a larger pool would open connections only to
throw them away. A custom ``session_factory`` is called once and should size
its adapter the same way.

``GeventHubBackend`` is what every backend on gevent's hub shares; with
``--client curl`` the backend is ``gevent_curl.GeventCurlBackend`` instead.

The process must be monkey-patched before requests is imported: the CLI does
it for ``--backend gevent``; from the API, call ``gevent.monkey.patch_all()``
first. In an unpatched process this backend refuses to start rather than run
blocking I/O one URL at a time.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.queue
from gevent import monkey

from fetcher.backends.base import Backend, SessionFactory, run_task
from fetcher.errors import BackendError
from fetcher.models import FetchTask
from fetcher.transports.factory import make_session

if TYPE_CHECKING:
    from fetcher.options import Options

KILL_TIMEOUT_S = 2.0

NOT_PATCHED = ("the gevent backend needs a monkey-patched process, and this one is not: call "
               "gevent.monkey.patch_all() first thing, before importing requests (the fetcher "
               "command does this for --backend gevent), or use another backend (thread, process)")


class GeventHubBackend(Backend):
    """A backend whose work runs on gevent's hub: the patch check, a gevent result queue, Ctrl-C.

    Subclasses implement ``_start_work``, ``submit`` and ``_stop_work``.
    """

    name = "gevent"

    @classmethod
    def check(cls, options: Options, session_factory: SessionFactory | None = None) -> None:
        if not monkey.is_module_patched("socket"):
            raise BackendError(NOT_PATCHED)

    def _start(self) -> None:
        self.check(self.options, self.session_factory)
        self._cancel = gevent.event.Event()
        # The base class's wait() blocks on this queue: make it gevent's, because a
        # stdlib queue blocks the hub itself unless threading was patched too.
        self._results = gevent.queue.Queue()
        # Ctrl-C reaches the main greenlet as KeyboardInterrupt either way, and the
        # engine handles it; the hub would also print it as if it were a crash.
        self._gevent_hub = gevent.get_hub()
        self._hub_not_error = self._gevent_hub.NOT_ERROR
        self._gevent_hub.NOT_ERROR = (*self._hub_not_error, KeyboardInterrupt)
        self._start_work()

    def _start_work(self) -> None:
        raise NotImplementedError

    def _stop_work(self, cancel: bool) -> None:
        raise NotImplementedError

    def submit(self, task: FetchTask) -> None:
        raise NotImplementedError

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            self._cancel.set()
        try:
            self._stop_work(cancel)
        finally:
            self._gevent_hub.NOT_ERROR = self._hub_not_error


class GeventBackend(GeventHubBackend):
    """``pool`` long-lived greenlets taking tasks from one queue, through one shared Session.

    Long-lived, not a greenlet spawned per task: at a pool of 1,000, spawning
    (gevent's Pool.spawn and Group.add) was a tenth of the run's CPU.
    """

    def _start_work(self) -> None:
        factory = self.session_factory or partial(make_session, self.options, self.options.transport.pool)
        self._session: Any = factory()
        self._tasks: gevent.queue.Queue[FetchTask | None] = gevent.queue.Queue()
        self._greenlets = [gevent.spawn(self._work, self._session) for _ in range(self.options.transport.pool)]

    def submit(self, task: FetchTask) -> None:
        self._tasks.put(task)

    def _work(self, session: Any) -> None:
        while (task := self._tasks.get()) is not None:
            if not self._cancel.is_set():
                self._deliver(run_task(task, session, self.options, self._cancel))

    def _stop_work(self, cancel: bool) -> None:
        if cancel:
            # GreenletExit lands in each download's blocking read; fetch_one removes its .part.
            gevent.killall(self._greenlets, timeout=KILL_TIMEOUT_S)
        else:
            for _ in self._greenlets:
                self._tasks.put(None)
            gevent.joinall(self._greenlets)
        self._session.close()
