"""``--max-time`` while a response's head arrives, and stale keep-alive connections, for the requests transport.

urllib3 reads the status line and headers with blocking ``recv`` calls whose
timeout is per call: a server that sends its headers a byte a second never
trips it, and holds the URL (and the run's end) for as long as it likes.
libcurl's ``TIMEOUT`` covers the whole transfer; here a watchdog does: one
daemon thread (a greenlet under gevent) keeps the deadlines of the heads being
read and, when one passes, shuts the socket down, so the blocked read returns
at once. The transport then reports the deadline, not the broken connection.

The same connection class notes when a request dies before any response on a
connection that already carried one: the server closed an idle keep-alive
connection as the request went out. libcurl sends such a request again on a new
connection; the transport does the same (``Watching.stale``), once.

Only public API: urllib3's documented ``ConnectionCls`` of a connection pool
(a subclass whose ``getresponse`` arms the watchdog), set through the pool
classes of the PoolManager that ``HTTPAdapter.init_poolmanager`` and
``proxy_manager_for`` (both documented for subclassing) make.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from fetcher.transports.resolve import Resolving

_local = threading.local()  # the deadline of the head this thread (or greenlet) reads next


class Watch:
    """One armed deadline; ``fired`` once the watchdog shut its socket down."""

    __slots__ = ("sock", "fired", "done")

    def __init__(self, sock: Any) -> None:
        self.sock, self.fired, self.done = sock, False, False


class Watchdog:
    """Shuts sockets down at their deadlines; one thread for the process, started on first use."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._count = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, sock: Any, deadline: float) -> Watch:
        watch = Watch(sock)
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._count), watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fetcher-head-deadline", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._cond.notify()  # the earliest deadline now: the thread sleeps too long otherwise
        return watch

    def disarm(self, watch: Watch) -> None:
        with self._cond:
            watch.done = True  # left in the heap: dropped when it comes up (no O(n) removal per request)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(60.0)
                    if not self._heap:
                        self._thread = None
                        return
                    continue
                deadline, _, watch = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                watch.fired, watch.done = True, True
            with contextlib.suppress(OSError):  # already closed: nothing is blocked on it
                watch.sock.shutdown(socket.SHUT_RDWR)


WATCHDOG = Watchdog()


class Watching:
    """What happened to the heads read inside one ``head_deadline``."""

    __slots__ = ("deadline", "watches", "stale")

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.watches: list[Watch] = []
        self.stale = False  # a request died before any response on a connection that had carried one

    @property
    def fired(self) -> bool:
        return any(watch.fired for watch in self.watches)


@contextlib.contextmanager
def head_deadline(deadline: float | None) -> Iterator[Watching]:
    """While inside, heads read by this thread end at ``deadline`` (monotonic; None: no deadline)."""
    watching = Watching(deadline)
    _local.watching = watching
    try:
        yield watching
    finally:
        _local.watching = None
        for watch in watching.watches:
            WATCHDOG.disarm(watch)


_HUNG_UP = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)


def _watched_response(conn: Any, read: Any) -> Any:
    watching: Watching | None = getattr(_local, "watching", None)
    reused = getattr(conn, "_fetcher_served", 0) > 0
    watch = None
    if watching is not None and watching.deadline is not None and conn.sock is not None:
        watch = WATCHDOG.arm(conn.sock, watching.deadline)
        watching.watches.append(watch)
    try:
        response = read()
    except _HUNG_UP:
        if reused and watching is not None:
            watching.stale = True
        raise
    finally:
        if watch is not None:
            WATCHDOG.disarm(watch)
    conn._fetcher_served = getattr(conn, "_fetcher_served", 0) + 1
    return response


class _Connection(Resolving, HTTPConnection):  # Resolving: the run's DNS answers (resolve.py)
    def getresponse(self) -> Any:
        return _watched_response(self, super().getresponse)


class _TLSConnection(Resolving, HTTPSConnection):
    def getresponse(self) -> Any:
        return _watched_response(self, super().getresponse)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


def _watched(manager: Any) -> Any:
    if manager.pool_classes_by_scheme.get("http") is HTTPConnectionPool:  # not a SOCKS manager's own classes
        manager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
    return manager


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections read a response's head within ``head_deadline``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watched(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return _watched(super().proxy_manager_for(proxy, **proxy_kwargs))
