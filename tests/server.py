"""A real HTTP/1.1 test server on 127.0.0.1 with routes for every fault fetcher handles.

Used in-process by the ``server`` fixture and as a subprocess
(``python tests/server.py``, which prints its port) by tests and benchmarks
that need it in another process.

Routes (query parameters in brackets):
    /files/NAME[?size=N&type=T]     deterministic body of N bytes (default 1000)
    /status/CODE[?retry_after=S&size=N]   that status, a short body (N bytes with size)
    /slow/NAME[?delay=S&size=N]     waits S seconds, then the file
    /drip/NAME[?size=N&interval=S]  declares N bytes, sends one byte every S seconds
    /reset/NAME                     closes the connection with a TCP reset, no response
    /truncate/NAME[?size=N]         declares N bytes, sends half, closes
    /flaky/NAME[?fail=K&code=C&format=F]  fails K times with C (default 503), then the file
                                    (with format: a real image, F: jpg, png, webp)
    /redirect/NAME[?to=URL&cookie=C]  302 to URL (default /files/NAME), with Set-Cookie: C if given
    /loop/NAME                      302 to itself
    /image/NAME[?format=F&size=N]   a body starting with F's magic bytes (png, jpeg, gif), served as image/F
    /img/NAME[?format=F&w=W&h=H&fault=X&robots=R&delay=S]
                                    a real W x H image made with Pillow (F: jpg, png, webp), after S s; fault
                                    truncate sends its first half (a whole HTTP response), corrupt
                                    garbles all but its first 16 bytes; robots sends X-Robots-Tag: R
    /html/NAME[?type=T]             an HTML error page served as T (default image/jpeg)
    /gzip/NAME[?size=N]             N zero bytes gzip-compressed, Content-Encoding: gzip (a bomb when N is big)
    /chunked/NAME[?size=N]          the file sent chunked, without Content-Length
    /echo                           the request's headers as JSON
    /gallery/N                      an HTML page with 3 <img> links and, for N < 3, an <a> to /gallery/N+1
                                    and one back to /gallery/0 (a crawl with a cycle)
    /ranged/NAME[?size=N&cut=K&ignore_range=1&change_after=M&interval=S]
                                    a file with an ETag that honours Range/If-Range; with cut, the
                                    first response stops after K bytes; with ignore_range, ranges
                                    are ignored; after M requests the file (and its ETag) changes;
                                    with interval, the first response sends 1,000 bytes every S seconds
    /disposition/NAME[?filename=F&star=S&raw=H&type=T]
                                    the file, with Content-Disposition: attachment;
                                    filename="F" and/or filename*=UTF-8''S (percent-
                                    encoded), or the raw header value H (its UTF-8
                                    bytes are sent as they are)
    /_stats                         JSON of the counters below
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit


MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff\xe0", "gif": b"GIF89a"}
HTML_PAGE = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>gone</body></html>"


def image_body(name: str, fmt: str, size: int) -> bytes:
    """What /image/NAME serves: the format's magic bytes, then the deterministic body."""
    magic = MAGIC[fmt]
    return magic + body_for(name, max(size - len(magic), 0))


def real_image(name: str, fmt: str = "jpg", width: int = 64, height: int = 48) -> bytes:
    """What /img/NAME serves: a W x H picture (two colours from the name) encoded as ``fmt``."""
    from PIL import Image, ImageDraw

    seed = hashlib.sha256(name.encode()).digest()
    image = Image.new("RGB", (width, height), tuple(seed[:3]))
    ImageDraw.Draw(image).rectangle((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=tuple(seed[3:6]))
    buffer = io.BytesIO()
    image.save(buffer, {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt])
    return buffer.getvalue()


def faulty_image(name: str, query: dict[str, str]) -> bytes:
    fmt = query.get("format", "jpg")
    body = real_image(name, fmt, int(query.get("w", 64)), int(query.get("h", 48)))
    fault = query.get("fault")
    if fault == "truncate":
        return body[: len(body) // 2]
    if fault == "corrupt":
        return body[:16] + bytes(b ^ 0x5A for b in body[16:])
    return body


def gallery_page(number: int) -> bytes:
    """What /gallery/N serves: images g{N}-0..2.png, a link onwards (N < 3) and one back to the start."""
    images = "".join(f'<img src="/image/g{number}-{i}.png?format=png&size=2000">' for i in range(3))
    onwards = f'<a href="/gallery/{number + 1}">next</a>' if number < 3 else ""
    return f'<html><body>{images}{onwards}<a href="/gallery/0">home</a></body></html>'.encode()


def body_for(name: str, size: int) -> bytes:
    """The deterministic body served for ``name`` at ``size`` bytes."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Stats:
    """Thread-safe counters that tests assert on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}  # path -> monotonic arrival times
        self.ranges: dict[str, list[str | None]] = {}  # path -> Range header of each request
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
            stats.times.setdefault(parts.path, []).append(time.monotonic())
            stats.ranges.setdefault(parts.path, []).append(self.headers.get("Range"))
            stats.active += 1
            stats.max_active = max(stats.max_active, stats.active)
        self._counted = True
        try:
            self.server.wait_for_release(parts.path)
            self._route(parts.path, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self._uncount()

    def _uncount(self) -> None:
        """This request no longer counts as active (once per request).

        Called before the last bytes of a response go out, too: once the client
        has them it may start its next request, possibly on another connection
        and thread, before this one's ``finally`` runs; counting both then would
        report one request more at once than the client ever had.
        """
        if self._counted:
            self._counted = False
            with self.server.stats.lock:
                self.server.stats.active -= 1

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
            body = body_for(name, size) if "size" in query else f"status {code}\n".encode()
            self._send(code, body, "text/plain", headers)
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
                headers = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
                self._send(int(query.get("code", 503)), b"try again\n", "text/plain", headers)
            elif "format" in query:  # then a real image (for dataset tests)
                fmt = query["format"]
                self._send(200, real_image(name, fmt), "image/" + fmt.replace("jpg", "jpeg"))
            else:
                self._send_file(name, size, "application/octet-stream")
        elif kind == "loop":
            self._send(302, b"", "text/plain", {"Location": self.path})
        elif kind == "disposition":
            body = body_for(name, size)
            self._send(200, body, query.get("type", "application/octet-stream"),
                       {"Content-Disposition": _disposition(query)})
        elif kind == "redirect":
            headers = {"Location": query.get("to", f"/files/{name}")}
            if "cookie" in query:
                headers["Set-Cookie"] = query["cookie"] + "; Path=/"
            self._send(302, b"", "text/plain", headers)
        elif kind == "image":
            fmt = query.get("format", "png")
            self._send(200, image_body(name, fmt, size), f"image/{fmt}")
        elif kind == "img":
            fmt = query.get("format", "jpg")
            time.sleep(float(query.get("delay", 0)))
            headers = {"X-Robots-Tag": query["robots"]} if "robots" in query else {}
            self._send(200, faulty_image(name, query), "image/" + fmt.replace("jpg", "jpeg"), headers)
        elif kind == "html":
            self._send(200, HTML_PAGE, query.get("type", "image/jpeg"))
        elif kind == "gzip":
            self._send(200, self.server.gzipped(size), "application/octet-stream", {"Content-Encoding": "gzip"})
        elif kind == "chunked":
            self._chunked(body_for(name, size))
        elif kind == "ranged":
            self._ranged(path, name, size, query)
        elif kind == "gallery":
            self._send(200, gallery_page(int(name)), "text/html; charset=utf-8")
        elif kind == "echo":
            self._send(200, json.dumps(dict(self.headers.items())).encode(), "application/json")
        elif kind == "robots.txt" and self.server.robots is not None:  # --robots tests set it
            code, text = self.server.robots
            self._send(code, text.encode(), "text/plain")
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
        self._uncount()
        self.end_headers()
        self.wfile.write(body)

    def _ranged(self, path: str, name: str, size: int, query: dict[str, str]) -> None:
        with self.server.stats.lock:
            seen = self.server.stats.requests[path]
        version = "v2" if seen > int(query.get("change_after", 10**9)) else "v1"
        body = body_for(f"{version}-{name}", size)
        etag = f'"{version}-{name}"'
        wanted = self.headers.get("Range", "")
        if_range = self.headers.get("If-Range")
        start = 0
        if wanted.startswith("bytes=") and not query.get("ignore_range") and if_range in (None, etag):
            start = int(wanted[6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        cut = int(query.get("cut", 0))
        interval = float(query.get("interval", 0))
        if interval and seen == 1:  # a slow first response: a client can stop it half way
            for offset in range(start, size, 1000):
                self.wfile.write(body[offset:offset + 1000])
                self.wfile.flush()
                if self.server.stopping.wait(interval):
                    break
            return
        if cut and seen == 1:
            self.wfile.write(body[start:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def _chunked(self, body: bytes, piece: int = 4096) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for offset in range(0, len(body), piece):
            part = body[offset:offset + piece]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

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


def _disposition(query: dict[str, str]) -> str:
    if "raw" in query:
        # send_header encodes latin-1: this sends the UTF-8 bytes unchanged, as careless servers do.
        return query["raw"].encode("utf-8").decode("latin-1")
    value = "attachment"
    if "filename" in query:
        escaped = query["filename"].replace("\\", "\\\\").replace('"', '\\"')
        value += f'; filename="{escaped}"'
    if "star" in query:
        value += "; filename*=UTF-8''" + quote(query["star"], safe="")
    return value


HOLD_GIVE_UP_S = 120.0  # a held response goes by itself after this: a bound on a test that forgot it, no timing


class TestServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on 127.0.0.1 with counters and a clean stop."""

    __test__ = False  # not a pytest test class, despite the name

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        if ":" in host:  # an IPv6 address: TCPServer makes its socket with the instance's family
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)
        self.host = host
        self.stats = Stats()
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._gzip_cache: dict[int, bytes] = {}
        self.robots: tuple[int, str] | None = None  # (status, body) of /robots.txt; None: 404
        self._holds: list[tuple[str, threading.Event]] = []  # (path prefix, released), see hold()

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that vanish mid-response (killed, timed out) are normal here, not errors."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def gzipped(self, size: int) -> bytes:
        """``size`` zero bytes, gzip-compressed (cached: a 1 GiB bomb compresses to ~1 MiB)."""
        if size not in self._gzip_cache:
            block = bytes(1 << 20)
            buffer = io.BytesIO()
            with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as handle:
                for _ in range(size // len(block)):
                    handle.write(block)
                handle.write(bytes(size % len(block)))
            self._gzip_cache[size] = buffer.getvalue()
        return self._gzip_cache[size]

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def hold(self, prefix: str) -> threading.Event:
        """Answer no request for a path starting with ``prefix`` until the returned event is set.

        The request is counted on arrival, as any. A test holds a distributed run open this way
        until every worker it started has joined: else on a loaded machine the first could finish
        the run alone, and a worker that connects after serve ended waits for a server that is gone.
        """
        released = threading.Event()
        self._holds.append((prefix, released))
        return released

    def wait_for_release(self, path: str) -> None:
        for prefix, released in self._holds:
            if path.startswith(prefix):
                released.wait(HOLD_GIVE_UP_S)

    def start(self) -> TestServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for _, released in self._holds:
            released.set()
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
