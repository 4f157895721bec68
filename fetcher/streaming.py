"""What every body shares, whichever transport read it: cancel, resume hashing, completeness.

The read loops themselves live in the transports (transports/); the rules
applied to each chunk live in ``download.Download.write``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

from fetcher.guards import FetchFailure
from fetcher.models import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fetcher.checksum import Verifier

MAGIC_BYTES = 64  # enough for every signature guards.check_magic knows


class CancelFlag(Protocol):
    """Anything with ``is_set()``: threading.Event, multiprocessing.Event, gevent Event."""

    def is_set(self) -> bool: ...


class Cancelled(Exception):
    """The run is being cancelled: stop this download between two reads."""


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


def is_encoded(headers: Mapping[str, str]) -> bool:
    return (headers.get("Content-Encoding") or "identity").strip().lower() not in ("", "identity")


def check_complete(headers: Mapping[str, str], status: int, received: int) -> None:
    """A body shorter than its Content-Length is a failure, never a saved file.

    urllib3 and libcurl already enforce Content-Length on the wire; this second
    check covers identity bodies whatever the transport or its version does.
    """
    declared = headers.get("Content-Length")
    if declared is None or is_encoded(headers):
        return
    try:
        expected = int(declared)
    except ValueError:
        return
    if received < expected:
        raise FetchFailure(ErrorKind.TRUNCATED, f"body ended after {received} of {expected} bytes",
                           retryable=True, http_status=status)
