"""A transfer whose wakeup is lost still finishes (issue 27: the 10 s transfer).

libcurl's event interface (``socket_action``) runs only the transfers libcurl itself
marks: a socket it announced as readable, a timer it set, a transfer it flagged as
having buffered input. On the WAN benchmark a 4,448-byte file once took 10.003 s in
one attempt: its response was already in, and it was run only when the connect
timer libcurl sets for every transfer (and never clears) expired, 10 s after it
started. After that timer a transfer has no timer at all, so the same lost wakeup
later in a transfer would wait for the read timeout and fail. curl's own
``--parallel`` calls ``curl_multi_perform``, which runs every transfer on every
wake-up, and never depends on those marks.

Here the lost wakeup is made on purpose against a real server: the first time
libcurl asks to watch a socket for reading, the request is dropped, so nothing
tells the driver the response came. The deadline tick must let libcurl look at
every transfer (``CurlTransfers.recheck``); the read timeout is long enough for
several ticks and far shorter than the connect timeout, so on the old code the
transfer failed as silent.
"""

from __future__ import annotations

import pytest
from conftest import HAVE_PYCURL

from fetcher import fetch

pytestmark = pytest.mark.skipif(not HAVE_PYCURL, reason="pycurl is not installed")


def losing_poller():
    """A SocketPoller that loses the first request to watch a connection for reading, and counts it.

    Only a TCP socket: libcurl also watches one of its own for reading (its wake-up)."""
    import socket

    import pycurl

    from fetcher.transports.curl.sockets import SocketPoller

    class LosesOneWakeup(SocketPoller):
        lost: list[int] = []

        def on_socket(self, what: int, fd: int, multi: object, data: object) -> None:
            if what != pycurl.POLL_REMOVE and what & pycurl.POLL_IN and not LosesOneWakeup.lost and is_tcp(fd):
                LosesOneWakeup.lost.append(fd)
                self.unregister(fd)  # as if libcurl had never said it wants to read it
                return
            super().on_socket(what, fd, multi, data)

    def is_tcp(fd: int) -> bool:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # libcurl's wake-up: an eventfd or a pipe
            return False
        try:
            return sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
        finally:
            sock.detach()  # libcurl's descriptor: never closed here

    return LosesOneWakeup


def test_a_transfer_whose_socket_is_never_watched_still_finishes(server, out, monkeypatch):
    poller = losing_poller()
    monkeypatch.setattr("fetcher.backends.multi.SocketPoller", poller)
    url = server.url("/slow/lost.jpg?delay=0.3&size=4448")
    results = list(fetch([url], out=out, backend="multi", client="curl", pool=2, connect_timeout=60,
                         read_timeout=3, retries=0))
    assert len(poller.lost) == 1, "the wakeup was not lost: the test proves nothing"
    assert [(r.url, r.ok, r.attempts, r.bytes) for r in results] == [(url, True, 1, 4448)], results[0].error


def test_every_transfer_in_flight_is_rechecked_not_only_the_lost_one(server, out, monkeypatch):
    # Other transfers keep the driver busy (sockets ready, results settled) while one waits unwatched:
    # a recheck only when nothing else happens would leave it to its timer.
    poller = losing_poller()
    monkeypatch.setattr("fetcher.backends.multi.SocketPoller", poller)
    urls = [server.url("/slow/first.jpg?delay=0.3&size=4448")] + [
        server.url(f"/drip/d{i}.bin?size=20&interval=0.1") for i in range(3)]
    results = {r.url: r for r in fetch(urls, out=out, backend="multi", client="curl", pool=4,
                                       connect_timeout=60, read_timeout=3, retries=0)}
    assert len(poller.lost) == 1
    assert {url: (r.ok, r.attempts) for url, r in results.items()} == {url: (True, 1) for url in urls}
