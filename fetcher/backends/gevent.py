"""The gevent backend: a gevent Pool of ``pool`` greenlets sharing one Session.

One Session, not one per worker: after monkey-patching, ``threading.local`` is
per greenlet, so a session per worker would become a session per URL. Its
adapter keeps ``pool`` connections per host (``make_session(options, pool)``);
with urllib3's default of 10, a larger pool would open connections only to
throw them away. A custom ``session_factory`` is called once and should size
its adapter the same way.

With ``--client curl`` the greenlets share one libcurl multi handle instead,
driven by gevent's loop (transports/gevent_curl.py), and each takes an easy
handle from a free list of ``pool`` for the download it runs.

The process must be monkey-patched before requests is imported: the CLI does
it for ``--backend gevent``; from the API, call ``gevent.monkey.patch_all()``
first. In an unpatched process this backend refuses to start rather than run
blocking I/O one URL at a time.
"""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.pool
import gevent.queue
from gevent import monkey

from fetcher.backends.base import Backend, run_task
from fetcher.errors import BackendError
from fetcher.models import Task
from fetcher.session import make_session

if TYPE_CHECKING:
    from fetcher.transports.gevent_curl import CurlHub

KILL_TIMEOUT_S = 2.0

NOT_PATCHED = ("the gevent backend needs a monkey-patched process, and this one is not: call "
               "gevent.monkey.patch_all() first thing, before importing requests (the fetcher "
               "command does this for --backend gevent), or use another backend (thread, process)")


class GeventBackend(Backend):
    name = "gevent"

    def _start(self) -> None:
        if not monkey.is_module_patched("socket"):
            raise BackendError(NOT_PATCHED)
        self._curl_hub: CurlHub | None = None
        self._free: list[Any] = []  # --client curl: an easy handle per greenlet at work
        if self.session_factory is None and self.options.client == "curl":
            from fetcher.transports.environment import Environment
            from fetcher.transports.gevent_curl import CurlHub, GeventCurlTransport

            self._curl_hub, environment = CurlHub(), Environment.read()
            self._free = [GeventCurlTransport(self.options, environment, self._curl_hub)
                          for _ in range(self.options.pool)]
            self._session: Any = None
        else:
            factory = self.session_factory or partial(make_session, self.options, self.options.pool)
            self._session = factory()
        self._pool = gevent.pool.Pool(self.options.pool)
        self._pending: deque[Task] = deque()
        self._active = 0  # greenlets draining _pending; counted here, not by the Pool (see submit)
        # The base class's wait() blocks on this queue: make it gevent's, because a
        # stdlib queue blocks the hub itself unless threading was patched too.
        self._results = gevent.queue.Queue()
        self._cancel = gevent.event.Event()
        # Ctrl-C reaches the main greenlet as KeyboardInterrupt either way, and the
        # engine handles it; the hub would also print it as if it were a crash.
        self._gevent_hub = gevent.get_hub()
        self._hub_not_error = self._gevent_hub.NOT_ERROR
        self._gevent_hub.NOT_ERROR = (*self._hub_not_error, KeyboardInterrupt)

    def submit(self, task: Task) -> None:
        self._pending.append(task)
        # The Pool forgets a finished greenlet only on a later hub callback, so its
        # free_count() can say "full" when every greenlet has already returned, and
        # the task would be stranded. Our own count drops the moment a drainer ends.
        if self._active < self.options.pool:
            self._active += 1
            self._pool.spawn(self._drain)

    def _drain(self) -> None:
        try:
            while self._pending and not self._cancel.is_set():
                task = self._pending.popleft()
                if self._curl_hub is None:
                    self._deliver(run_task(task, self._session, self.options, self._cancel))
                    continue
                transport = self._free.pop()  # there are as many as greenlets
                try:
                    self._deliver(run_task(task, transport, self.options, self._cancel))
                finally:
                    self._free.append(transport)
        finally:
            self._active -= 1

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            self._cancel.set()
            self._pending.clear()
            # GreenletExit lands in each download's blocking read; fetch_one removes its .part.
            self._pool.kill(timeout=KILL_TIMEOUT_S)
        else:
            self._pool.join()
        if self._session is not None:
            self._session.close()
        for transport in self._free:
            transport.close()
        if self._curl_hub is not None:
            self._curl_hub.close()
        self._gevent_hub.NOT_ERROR = self._hub_not_error
