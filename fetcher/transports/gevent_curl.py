"""libcurl under gevent (``--backend gevent --client curl``): one multi handle on gevent's loop.

libcurl must never block the event loop, so no greenlet calls ``perform``.
Every download is an easy handle (a ``CurlTransport`` each) added to one
shared ``CurlMulti``; libcurl says which sockets to watch and when it wants
to be called back (its socket and timer callbacks), and gevent's own loop
watches them with io watchers and a timer. A greenlet waits on its own
``AsyncResult`` until libcurl reports its transfer over, so other greenlets
(an application's crawl logic, say) run meanwhile. The receiver's callbacks
(caps, checks, the file) run inside ``socket_action`` on the hub, and never
switch. Name resolution is libcurl's threaded resolver (pycurl's wheels are
built with it), so a slow DNS answer does not stall the loop either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import pycurl

from fetcher.transports.curl import CurlTransport, ended_transfers

if TYPE_CHECKING:
    from fetcher.options import Options
    from fetcher.transports.base import Head, Receiver, Request
    from fetcher.transports.environment import Environment

_READ, _WRITE = 1, 2  # libev's EV_READ and EV_WRITE, as gevent's loop.io takes them


class CurlHub:
    """One libcurl multi handle driven by the current gevent hub."""

    def __init__(self) -> None:
        self._loop = gevent.get_hub().loop
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._watchers: dict[int, Any] = {}  # fd -> gevent io watcher
        self._timer: Any = None
        self._waiting: dict[pycurl.Curl, gevent.event.AsyncResult] = {}

    def perform(self, curl: pycurl.Curl) -> tuple[int, str]:
        """Run ``curl``'s transfer, blocking only this greenlet: libcurl's (code, message), (0, "") if done."""
        done = gevent.event.AsyncResult()
        self._waiting[curl] = done
        self._multi.add_handle(curl)
        try:
            result: tuple[int, str] = done.get()
            return result
        finally:
            if self._waiting.pop(curl, None) is not None:  # killed while waiting (a cancel): take it out
                self._multi.remove_handle(curl)

    def close(self) -> None:
        for watcher in self._watchers.values():
            watcher.stop()
        self._watchers.clear()
        if self._timer is not None:
            self._timer.stop()
        self._multi.close()

    # -- libcurl's callbacks (inside add_handle / socket_action: never switch) ----------

    def _on_socket(self, what: int, fd: int, _multi: object, _data: object) -> None:
        watcher = self._watchers.get(fd)
        if what == pycurl.POLL_REMOVE:
            if watcher is not None:
                watcher.stop()
                del self._watchers[fd]
            return
        events = (_READ if what & pycurl.POLL_IN else 0) | (_WRITE if what & pycurl.POLL_OUT else 0)
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

    def _on_io(self, events: int, fd: int) -> None:
        flags = (pycurl.CSELECT_IN if events & _READ else 0) | (pycurl.CSELECT_OUT if events & _WRITE else 0)
        self._act(fd, flags)

    def _on_timeout(self) -> None:
        self._timer = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, flags: int) -> None:
        """Let libcurl move, then wake the greenlets whose transfers ended."""
        try:
            self._multi.socket_action(fd, flags)
            for curl, code, message in ended_transfers(self._multi):
                self._wake(curl, code, message)
        except Exception as exc:  # noqa: BLE001 - on the hub, an exception would only be printed
            for curl in list(self._waiting):
                waiter = self._waiting.pop(curl)
                self._multi.remove_handle(curl)
                waiter.set_exception(exc)

    def _wake(self, curl: pycurl.Curl, code: int, message: str) -> None:
        waiter = self._waiting.pop(curl, None)
        self._multi.remove_handle(curl)
        if waiter is not None:
            waiter.set((code, message))


class GeventCurlTransport(CurlTransport):
    """A ``CurlTransport`` whose ``fetch`` waits on the hub instead of calling ``perform``."""

    def __init__(self, options: Options, environment: Environment, hub: CurlHub) -> None:
        super().__init__(options, environment)
        self._hub = hub

    def fetch(self, request: Request, receiver: Receiver) -> Head:
        self.start(request, receiver)
        code, message = self._hub.perform(self.curl)
        return self.finish(code, message)
