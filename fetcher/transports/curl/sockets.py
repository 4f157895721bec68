"""The sockets libcurl's multi interface asks to watch, in one epoll set.

Both drivers of ``CurlTransfers`` use it: the multi backend waits on it
directly, and under gevent (backends/gevent_curl.py) the hub watches the epoll
descriptor itself, as one socket. ``wanted`` and ``curl_flags`` translate
libcurl's socket events for a driver that watches sockets itself.

Each wait hands back at most ``EVENTS_PER_WAKE`` ready sockets. At a pool of
1,000 against a server that answers every request after 200 ms, responses come
in bursts. Read and settle a whole burst before the engine sees any result, and
the first transfer's slot waits for the last one before it gets a new URL: a
mean of 52 ms from a response to the next request on its connection, against
16-20 ms with the cap, and a steady state of 78-80% of pool ÷ delay against
86-88% (multi backend; gevent's went from 77-79% to 86-88% the same way).
epoll hands out the rest on the next waits, in turn (a reported socket goes to
the back of its ready list), so none starves.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

import pycurl

EVENTS_PER_WAKE = 16
_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR  # a hang-up or error is for libcurl to read


class SocketPoller:
    """epoll where the platform has it, else poll(): the same calls, no FD_SETSIZE limit.

    Raw, not ``selectors``: libcurl changes what it watches on almost every
    request, and the selectors layer costs several Python calls per change.

    Args:
        epoll: what makes the epoll object (default ``select.epoll``, None without it);
            under gevent, the unpatched one (monkey-patching removes it from ``select``).
    """

    def __init__(self, epoll: Callable[[], Any] | None = getattr(select, "epoll", None)) -> None:
        self._epoll = epoll() if epoll is not None else None
        self._poll = select.poll() if self._epoll is None else None
        self._watched: set[int] = set()

    def fileno(self) -> int | None:
        """The epoll set's own descriptor, readable while a watched socket is ready; None with poll()."""
        return self._epoll.fileno() if self._epoll is not None else None

    def on_socket(self, what: int, fd: int, _multi: object, _data: object) -> None:
        """libcurl's socket callback (``M_SOCKETFUNCTION``): start, change or stop watching ``fd``."""
        if what == pycurl.POLL_REMOVE:
            self.unregister(fd)
        else:
            self.watch(fd, (select.POLLIN if what & pycurl.POLL_IN else 0)
                       | (select.POLLOUT if what & pycurl.POLL_OUT else 0))

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
        """Ready ``(fd, events)``, at most ``EVENTS_PER_WAKE`` with epoll, waiting up to ``timeout_s``."""
        if self._epoll is not None:
            return self._epoll.poll(timeout_s, EVENTS_PER_WAKE)  # type: ignore[no-any-return]
        # poll() lists by descriptor: a cap would serve the lowest ones first every time.
        return self._poll.poll(timeout_s * 1000)  # type: ignore[union-attr]

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


def curl_flags(events: int) -> int:
    """poll/epoll events as the ``CSELECT_*`` flags ``socket_action`` takes."""
    return ((pycurl.CSELECT_IN if events & _READABLE else 0)
            | (pycurl.CSELECT_OUT if events & select.POLLOUT else 0)
            | (pycurl.CSELECT_ERR if events & select.POLLERR else 0))


def wanted(what: int) -> tuple[bool, bool] | None:
    """What libcurl's socket callback asks for ``what``: (read, write), or None to stop watching."""
    if what == pycurl.POLL_REMOVE:
        return None
    return bool(what & pycurl.POLL_IN), bool(what & pycurl.POLL_OUT)


def ready_flags(readable: bool, writable: bool) -> int:
    """The ``CSELECT_*`` flags for a socket found readable and/or writable."""
    return (pycurl.CSELECT_IN if readable else 0) | (pycurl.CSELECT_OUT if writable else 0)

