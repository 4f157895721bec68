"""Reading one response body: the chunk loop every download shares.

``read1`` returns whatever has arrived (up to a chunk), so deadlines are
checked between reads even when a server drips one byte at a time, and each
read's socket timeout is cut to the time left (see ``guards.TransferGuard``).
The body goes to any sink with ``write``: a ``.part`` file, or memory.
"""

from __future__ import annotations

import hashlib
from typing import IO, TYPE_CHECKING, Any, Protocol

import urllib3.exceptions

from fetcher.guards import FetchFailure, TransferGuard, check_magic
from fetcher.models import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    import requests

    from fetcher.checksum import Verifier

MAGIC_BYTES = 64  # enough for every signature guards.check_magic knows


class CancelFlag(Protocol):
    """Anything with ``is_set()``: threading.Event, multiprocessing.Event, gevent Event."""

    def is_set(self) -> bool: ...


class Cancelled(Exception):
    """The run is being cancelled: stop this download between two reads."""


def stream_body(response: requests.Response, sink: IO[bytes], digest: hashlib._Hash, guard: TransferGuard,
                chunk_size: int, read_timeout: float, sniff: str | None, cancel: CancelFlag | None,
                verifier: Verifier) -> None:
    """Copy the decoded body to ``sink``, feeding ``digest``, ``guard`` and ``verifier``.

    Args:
        sniff: the declared Content-Type whose magic bytes must match the body's
            first bytes (``--accept``), or None not to check.
        read_timeout: restored on the socket afterwards, for the next request.
    """
    raw = response.raw
    head: bytes | None = b"" if sniff is not None else None
    sock = _socket_of(raw)
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if sock is not None:
                sock.settimeout(guard.next_read_timeout())
            try:
                chunk = raw.read1(chunk_size, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                raise guard.timed_out() from None
            if not chunk:
                break
            guard.account(len(chunk))
            if head is not None:
                head += chunk
                if len(head) >= MAGIC_BYTES:
                    check_magic(sniff, head)
                    head = None
            sink.write(chunk)
            digest.update(chunk)
            verifier.update(chunk)
        if head is not None:
            check_magic(sniff, head)
    finally:
        if sock is not None:
            try:
                sock.settimeout(read_timeout)
            except OSError:
                pass


def hash_prefix(path: str, offset: int, verifier: Verifier) -> hashlib._Hash:
    """SHA-256 state after the first ``offset`` bytes of ``path`` (a resumed download)."""
    digest = hashlib.sha256()
    if offset:
        with open(path, "rb") as handle:
            remaining = offset
            while remaining and (block := handle.read(min(remaining, 1 << 20))):
                digest.update(block)
                verifier.update(block)
                remaining -= len(block)
    return digest


def _socket_of(raw: object) -> Any:
    """The socket under a urllib3 response, to cut its timeout to the deadline (None if unknown)."""
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if hasattr(sock, "settimeout") else None


def is_encoded(headers: Mapping[str, str]) -> bool:
    return headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")


def check_complete(response: requests.Response, received: int) -> None:
    """A body shorter than its Content-Length is a failure, never a saved file.

    urllib3 already enforces Content-Length on the raw stream; this second check
    covers identity bodies whatever the urllib3 version does.
    """
    declared = response.headers.get("Content-Length")
    if declared is None or is_encoded(response.headers):
        return
    try:
        expected = int(declared)
    except ValueError:
        return
    if received < expected:
        raise FetchFailure(ErrorKind.TRUNCATED, f"body ended after {received} of {expected} bytes",
                           retryable=True, http_status=response.status_code)
