"""An HTTP/1.1 server on 127.0.0.1 that answers every GET after a fixed delay.

For the latency-bound benchmark: with every response held ``--delay`` seconds,
a client with ``pool`` downloads in flight can at best do ``pool / delay``
requests per second, so the achieved rate divided by that is how well the
client keeps its pool busy. One asyncio event loop on raw Protocols (no
streams, no thread per connection) holds thousands of idle keep-alive
connections and a timer per request cheaply.

    python benchmarks/delay_server.py [--delay 0.2] [--size 64]

prints its port on the first line of stdout, then serves until killed, until its
parent process goes away, or after ``--max-seconds``.

Routes: any path → ``--size`` bytes after the delay; ``/_stats`` → JSON
counters at once, with the time of every response since the first request
(``sent_s``, for the harness's mid-run rate); ``/_reset`` → zero the counters at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time

MAX_HEADER_BYTES = 64 * 1024


class Stats:
    """Counters the harness reads through /_stats."""

    def __init__(self) -> None:
        self.open = 0  # live connections: never reset, they are still open
        self.reset()

    def reset(self) -> None:
        self.responses = 0
        self.first_request: float | None = None  # monotonic seconds
        self.last_response: float | None = None
        self.max_open = self.open
        self.sent_at: list[float] = []  # monotonic time of every counted response, in order

    def as_json(self) -> bytes:
        window = (None if self.first_request is None or self.last_response is None
                  else self.last_response - self.first_request)
        return json.dumps({"responses": self.responses, "window_s": window,
                           "open": self.open, "max_open": self.max_open,
                           "sent_s": [round(t - self.first_request, 5) for t in self.sent_at]
                           if self.first_request is not None else []}).encode()


class DelayProtocol(asyncio.Protocol):
    """One connection: parse request heads, answer each after the delay, keep alive."""

    def __init__(self, stats: Stats, delay: float, body: bytes) -> None:
        self.stats, self.delay, self.body = stats, delay, body
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.open += 1
        self.stats.max_open = max(self.stats.max_open, self.stats.open)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        # Bounded: each pass consumes one request head from the buffer.
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            self._handle(head)
        if len(self.buffer) > MAX_HEADER_BYTES and self.transport:
            self.transport.close()

    def _handle(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split()
        path = parts[1] if len(parts) > 1 else b"/"
        close = any(line.lower().replace(b" ", b"") == b"connection:close" for line in lines[1:])
        if path.startswith(b"/_stats"):
            self._send(self.stats.as_json(), b"application/json", close, count=False)
        elif path.startswith(b"/_reset"):
            self.stats.reset()
            self._send(b"{}", b"application/json", close, count=False)
        else:
            if self.stats.first_request is None:
                self.stats.first_request = time.monotonic()
            asyncio.get_running_loop().call_later(self.delay, self._send, self.body,
                                                  b"application/octet-stream", close, True)

    def _send(self, body: bytes, content_type: bytes, close: bool, count: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n")
        self.transport.write(head + body)
        if count:
            self.stats.responses += 1
            self.stats.last_response = now = time.monotonic()
            self.stats.sent_at.append(now)
        if close:
            self.transport.close()


def raise_nofile_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: 1,000 connections need more than 1,024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _watch_parent(parent: int, max_seconds: float) -> None:
    """Stop when the harness is gone (re-parented) or after max_seconds: never linger."""
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline and os.getppid() == parent:
        await asyncio.sleep(0.5)


async def serve(port: int, delay: float, size: int, max_seconds: float) -> None:
    stats = Stats()
    body = b"x" * size
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: DelayProtocol(stats, delay, body), "127.0.0.1", port,
                                      backlog=4096, reuse_address=True)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await _watch_parent(os.getppid(), max_seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds before every response (0.2)")
    parser.add_argument("--size", type=int, default=64, help="body bytes of every response (64)")
    parser.add_argument("--max-seconds", type=float, default=3600, help="stop by itself after this")
    args = parser.parse_args()
    raise_nofile_limit()
    try:
        asyncio.run(serve(args.port, args.delay, args.size, args.max_seconds))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
