"""No delayed-ACK stall on a reused connection (issue 23, item 12): each response's headers are
acknowledged at once, on the socket that carries them. Checked by what is called, not by time."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pycurl = pytest.importorskip("pycurl")

from fetcher import fetch  # noqa: E402
from fetcher.transports.curl import quickack  # noqa: E402

pytestmark = pytest.mark.skipif(not quickack.ENABLED, reason="TCP_QUICKACK is Linux's")


class TwoWrites(BaseHTTPRequestHandler):
    """Python's http.server as the issue found it: keep-alive, headers and body in two writes."""

    protocol_version = "HTTP/1.1"
    peers: list[int] = []

    def do_GET(self) -> None:
        TwoWrites.peers.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Length", "5000")
        self.end_headers()
        self.wfile.write(b"x" * 5000)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), TwoWrites)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    TwoWrites.peers = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_every_response_is_acknowledged_on_its_own_connection(origin, monkeypatch, tmp_path):
    acked: list[int] = []
    real = quickack.quick_ack

    def record(fd: int) -> None:
        acked.append(fd)
        real(fd)

    monkeypatch.setattr(quickack, "quick_ack", record)
    results = list(fetch([f"{origin}/f{i}.bin" for i in range(20)], out=str(tmp_path / "out"), backend="thread",
                         client="curl", pool=1))
    assert [r.bytes for r in results] == [5000] * 20
    assert len(set(TwoWrites.peers)) == 1  # one keep-alive connection carried all twenty
    assert len(acked) == 20 and len(set(acked)) == 1  # each response acknowledged at once, on that connection


def test_a_socket_is_found_by_its_local_port():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    try:
        quickack.on_socket(client.fileno(), 0)
        assert quickack.socket_for(client.getsockname()[1]) == client.fileno()
        assert quickack.socket_for(1) is None
    finally:
        client.close()
        listener.close()
