"""A real HTTP/1.1 test server on 127.0.0.1 with routes for every fault fetcher handles.

Used in-process by the ``server`` fixture and as a subprocess
(``python tests/server.py``, which prints its port) by tests and benchmarks
that need it in another process.

Routes (query parameters in brackets):
    /files/NAME[?size=N&type=T]     deterministic body of N bytes (default 1000)
    /status/CODE[?retry_after=S]    that status, a short body
    /slow/NAME[?delay=S&size=N]     waits S seconds, then the file
    /drip/NAME[?size=N&interval=S]  declares N bytes, sends one byte every S seconds
    /reset/NAME                     closes the connection with a TCP reset, no response
    /truncate/NAME[?size=N]         declares N bytes, sends half, closes
    /flaky/NAME[?fail=K&code=C]     fails K times with C (default 503), then the file
    /redirect/NAME[?to=URL]         302 to URL (default /files/NAME)
    /_stats                         JSON of the counters below
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def body_for(name: str, size: int) -> bytes:
    """The deterministic body served for ``name`` at ``size`` bytes."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Stats:
    """Thread-safe counters that tests assert on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.connections = 0
        self.active = 0
        self.max_active = 0

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {"requests": dict(self.requests), "connections": self.connections,
                    "max_active": self.max_active}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each keep-alive
    # response then waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: TestServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.stats.lock:
            self.server.stats.connections += 1

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        stats = self.server.stats
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with stats.lock:
            stats.requests[parts.path] += 1
            stats.active += 1
            stats.max_active = max(stats.max_active, stats.active)
        try:
            self._route(parts.path, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with stats.lock:
                stats.active -= 1

    def _route(self, path: str, query: dict[str, str]) -> None:
        segments = path.split("/", 2)  # ["", kind, name]
        kind = segments[1] if len(segments) > 1 else ""
        name = segments[2] if len(segments) > 2 else ""
        size = int(query.get("size", 1000))
        if kind == "files":
            self._send_file(name, size, query.get("type", "application/octet-stream"))
        elif kind == "status":
            code = int(name)
            headers = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
            self._send(code, f"status {code}\n".encode(), "text/plain", headers)
        elif kind == "slow":
            time.sleep(float(query.get("delay", 1.0)))
            self._send_file(name, size, "application/octet-stream")
        elif kind == "drip":
            self._drip(name, size, float(query.get("interval", 0.5)))
        elif kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        elif kind == "truncate":
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(body_for(name, size)[: size // 2])
            self.wfile.flush()
            self.close_connection = True
        elif kind == "flaky":
            with self.server.stats.lock:
                seen = self.server.stats.requests[path]
            if seen <= int(query.get("fail", 1)):
                self._send(int(query.get("code", 503)), b"try again\n", "text/plain")
            else:
                self._send_file(name, size, "application/octet-stream")
        elif kind == "redirect":
            self._send(302, b"", "text/plain", {"Location": query.get("to", f"/files/{name}")})
        elif kind == "_stats":
            self._send(200, json.dumps(self.server.stats.snapshot()).encode(), "application/json")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send_file(self, name: str, size: int, content_type: str) -> None:
        self._send(200, body_for(name, size), content_type)

    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, name: str, size: int, interval: float) -> None:
        body = body_for(name, size)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        for offset in range(size):
            self.wfile.write(body[offset:offset + 1])
            self.wfile.flush()
            if self.server.stopping.wait(interval):
                break


class TestServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on 127.0.0.1 with counters and a clean stop."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.stats = Stats()
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> TestServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


if __name__ == "__main__":
    server = TestServer(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
