"""A hostile HTTP server on raw sockets, 127.0.0.1 only: replies no well-behaved server library would send.

Each path names a behaviour (``BEHAVIOURS``); the rest of the path keeps URLs apart
(``/ok/thread-requests-1``). Every connection has its own daemon thread; ``stop()``
closes the listener and every connection it accepted, and joins the threads (bounded).

``expected_body(path)`` is the exact body a correct client must store for a path that
can end ``ok``; any other path must never end ``ok``.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

REQUEST_LIMIT = 64 * 1024


def body_of(path: str, size: int = 3000) -> bytes:
    """A body that depends on the path: a client that mixes two responses up stores the wrong one."""
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def _head(status: str, headers: list[tuple[str, str]] | list[tuple[bytes, bytes]], body_length: int | None,
          close: bool = True) -> bytes:
    lines = [status.encode() if isinstance(status, str) else status]
    for name, value in headers:
        lines.append((name.encode() if isinstance(name, str) else name) + b": "
                     + (value.encode() if isinstance(value, str) else value))
    if body_length is not None:
        lines.append(b"Content-Length: " + str(body_length).encode())
    lines.append(b"Connection: close" if close else b"Connection: keep-alive")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Exchange:
    """One request on one connection: what was asked, and the socket to answer on."""

    def __init__(self, server: HostileServer, sock: socket.socket, path: str, served_here: int) -> None:
        self.server, self.sock, self.path, self.served_here = server, sock, path, served_here

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ok(self, extra: list[tuple[str, str]] | None = None, close: bool = True) -> None:
        body = body_of(self.path)
        self.send(_head("HTTP/1.1 200 OK", [("Content-Type", "application/octet-stream"), *(extra or [])],
                        len(body), close) + body)


def _ok(ex: Exchange) -> bool:
    ex.ok()
    return False


def _bad_status(ex: Exchange) -> bool:
    ex.send(b"HTTP/1.1 abc OK\r\nContent-Length: 3\r\n\r\nabc")
    return False


def _garbage_status(ex: Exchange) -> bool:
    ex.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n")
    return False


def _http09(ex: Exchange) -> bool:
    ex.send(b"<html>an HTTP/0.9 reply: a body, no status line, no headers</html>\n")
    return False


def _huge_header(ex: Exchange) -> bool:
    body = body_of(ex.path)
    ex.send(_head("HTTP/1.1 200 OK", [("X-Huge", "a" * 200_000)], len(body)) + body)
    return False


def _many_headers(ex: Exchange) -> bool:
    body = body_of(ex.path)
    ex.send(_head("HTTP/1.1 200 OK", [(f"X-H{i}", str(i)) for i in range(10_000)], len(body)) + body)
    return False


def _nul_header(ex: Exchange) -> bool:
    body = body_of(ex.path)
    ex.send(_head("HTTP/1.1 200 OK", [(b"X-Nul", b"a\x00b"), (b"Content-Type", b"image/jp\x00eg")], len(body)) + body)
    return False


def _non_utf8_header(ex: Exchange) -> bool:
    body = body_of(ex.path)
    headers = [(b"Content-Type", b"application/\xff\xfe"), (b"X-Latin", b"caf\xe9"),
               (b"Content-Disposition", b'attachment; filename="\xff\xfe\x80.bin"; filename*=UTF-8\'\'%FF%FE.bin')]
    ex.send(_head("HTTP/1.1 200 OK", headers, len(body)) + body)
    return False


def _conflicting_length(ex: Exchange) -> bool:
    body = body_of(ex.path)
    ex.send(_head("HTTP/1.1 200 OK", [("Content-Length", str(len(body) + 10))], len(body)) + body)
    return False


def _negative_length(ex: Exchange) -> bool:
    ex.send(_head("HTTP/1.1 200 OK", [("Content-Length", "-5")], None) + body_of(ex.path))
    return False


def _bad_chunked(ex: Exchange) -> bool:
    ex.send(_head("HTTP/1.1 200 OK", [("Transfer-Encoding", "chunked")], None) + b"10\r\n0123456789abcdef\r\nzz\r\nxx\r\n")
    return False


def _bad_encoding(encoding: str) -> Callable[[Exchange], bool]:
    def reply(ex: Exchange) -> bool:
        junk = b"\x1f\x8b\x08\x00garbage, not " + encoding.encode() + b" data" * 50
        ex.send(_head("HTTP/1.1 200 OK", [("Content-Encoding", encoding)], len(junk)) + junk)
        return False
    return reply


def _gzip_ok(ex: Exchange) -> bool:
    data = gzip.compress(body_of(ex.path))
    ex.send(_head("HTTP/1.1 200 OK", [("Content-Encoding", "gzip")], len(data)) + data)
    return False


def _informational(ex: Exchange) -> bool:
    ex.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
    ex.ok()
    return False


def _close_after_one(ex: Exchange) -> bool:
    """Says keep-alive, then hangs up after the response: the client's next request on it must be retried."""
    ex.ok(close=False)
    time.sleep(0.05)
    return False  # the connection is closed without a word


def _keep_alive(ex: Exchange) -> bool:
    ex.ok(close=False)
    return True


def _retry_after(value: str) -> Callable[[Exchange], bool]:
    def reply(ex: Exchange) -> bool:
        ex.send(_head("HTTP/1.1 503 Service Unavailable", [("Retry-After", value)], 4) + b"busy")
        return False
    return reply


def _redirect(location: bytes) -> Callable[[Exchange], bool]:
    def reply(ex: Exchange) -> bool:
        target = location.replace(b"PORT", str(ex.server.port).encode())
        ex.send(_head("HTTP/1.1 302 Found", [(b"Location", target)], 0))
        return False
    return reply


def _trickle(ex: Exchange) -> bool:
    """The head a byte at a time (a byte every 0.5 s: never silent long enough for a read timeout)."""
    head = _head("HTTP/1.1 200 OK", [("X-Slow", "x" * 200)], 10)
    for byte in head:
        if ex.server.stopping.is_set():
            return False
        ex.send(bytes([byte]))
        time.sleep(0.5)
    ex.send(b"0123456789")
    return False


# name -> the reply; the reply returns True to keep the connection for another request
BEHAVIOURS: dict[str, Callable[[Exchange], bool]] = {
    "ok": _ok, "keep-alive": _keep_alive, "gzip-ok": _gzip_ok,
    "bad-status": _bad_status, "garbage-status": _garbage_status, "http09": _http09,
    "huge-header": _huge_header, "many-headers": _many_headers, "nul-header": _nul_header,
    "non-utf8-header": _non_utf8_header, "conflicting-length": _conflicting_length,
    "negative-length": _negative_length, "bad-chunked": _bad_chunked,
    "bad-gzip": _bad_encoding("gzip"), "bad-br": _bad_encoding("br"), "bad-zstd": _bad_encoding("zstd"),
    "informational": _informational, "close-after-one": _close_after_one,
    "retry-after-huge": _retry_after("99999999999999999999999"), "retry-after-negative": _retry_after("-30"),
    "retry-after-garbage": _retry_after("\u00e9t\u00e9 tomorrow"), "retry-after-far-date": _retry_after(
        "Fri, 31 Dec 9999 23:59:59 GMT"),
    "redirect-file": _redirect(b"file:///etc/passwd"), "redirect-ftp": _redirect(b"ftp://127.0.0.1:PORT/x"),
    "redirect-credentials": _redirect(b"http://user:s3cret-in-location@127.0.0.1:PORT/ok/after-credentials"),
    "redirect-gopher": _redirect(b"gopher://127.0.0.1:PORT/x"),
    "trickle": _trickle,
}


class HostileServer:
    """Raw-socket HTTP/1.x server; counts requests per path."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self.stopping = threading.Event()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> HostileServer:
        self._accepter.start()
        return self

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(sock)
                thread = threading.Thread(target=self._serve, args=(sock,), name="hostile-conn", daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        served = 0
        try:
            while not self.stopping.is_set():
                path = self._read_request(sock)
                if path is None:
                    return
                with self._lock:
                    self.requests[path] += 1
                behaviour = BEHAVIOURS.get(path.split("/")[1], _ok)
                if not behaviour(Exchange(self, sock, path, served)):
                    return
                served += 1
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(sock)
            sock.close()

    @staticmethod
    def _read_request(sock: socket.socket) -> str | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk or len(data) > REQUEST_LIMIT:
                return None
            data += chunk
        parts = data.split(b"\r\n", 1)[0].split()
        return parts[1].decode("latin-1") if len(parts) >= 2 else None

    def stop(self) -> None:
        self.stopping.set()
        self._listener.close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(5)
        self._accepter.join(5)
