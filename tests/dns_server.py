"""A DNS server for the tests, on 127.0.0.1 over UDP, written with the standard library.

Names ending in ``.fetcher-test`` have an A record, 127.0.0.1, with ``ttl``; those starting with
``dual-`` also an AAAA record, ::1, and those starting with ``v6-`` only that; names starting
with ``nx-`` do not exist (NXDOMAIN); every other query gets an empty answer. It counts the
queries it gets per (name, type), so a test can say how often a run asked for a host.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter

SUFFIX = ".fetcher-test"
TYPES = {1: "A", 28: "AAAA"}


class DnsServer:
    """Start with ``start()``, stop with ``stop()``; ``address`` is ``127.0.0.1:PORT``."""

    def __init__(self, ttl: int = 300, port: int = 0) -> None:
        self.ttl = ttl
        self.queries: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", port))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._sock.getsockname()[1]}"

    def asked(self, name: str) -> int:
        """Queries for ``name``, of any type."""
        with self.lock:
            return sum(n for (qname, _), n in self.queries.items() if qname == name)

    def asked_once(self, name: str) -> bool:
        """``name`` was looked up once: one A query, and one AAAA beside it where the run asks for
        IPv6 too (run/dns.py's ``ipv6_configured``)."""
        from fetcher.run.dns import ipv6_configured

        aaaa = int(ipv6_configured())
        with self.lock:
            return self.queries[(name, "A")] == 1 and self.queries[(name, "AAAA")] == aaaa and sum(
                n for (qname, _), n in self.queries.items() if qname == name) == 1 + aaaa

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except OSError:
                continue
            try:
                self._sock.sendto(self._answer(data), peer)
            except (ValueError, IndexError, struct.error, OSError):
                continue  # a malformed query is dropped

    def _answer(self, query: bytes) -> bytes:
        ident, _flags, count = struct.unpack("!HHH", query[:6])
        labels, offset = [], 12
        while query[offset]:
            length = query[offset]
            labels.append(query[offset + 1: offset + 1 + length].decode("ascii").lower())
            offset += 1 + length
        qtype, _qclass = struct.unpack("!HH", query[offset + 1: offset + 5])
        question = query[12: offset + 5]
        name = ".".join(labels)
        with self.lock:
            self.queries[(name, TYPES.get(qtype, str(qtype)))] += 1
        if name.startswith("nx-"):
            return struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
        answers = b""
        if name.endswith(SUFFIX) and qtype == 1 and not name.startswith("v6-"):
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, self.ttl, 4) + socket.inet_aton("127.0.0.1")
        elif name.endswith(SUFFIX) and qtype == 28 and name.startswith(("dual-", "v6-")):
            answers = struct.pack("!HHHIH", 0xC00C, 28, 1, self.ttl, 16) + socket.inet_pton(socket.AF_INET6, "::1")
        return struct.pack("!HHHHHH", ident, 0x8180, 1, 1 if answers else 0, 0, 0) + question + answers
