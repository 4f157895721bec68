"""Expected checksums from the input (``sha256`` or ``md5`` columns) and their verification.

A FetchTask carries its expectation as ``"sha256:HEX"`` or ``"md5:HEX"``. fetch_one
feeds every chunk to a ``Verifier`` while it streams (sha256 is computed for
the manifest anyway, so only md5 costs a second hash) and fails the download
with ``bad-content`` on a mismatch.
"""

from __future__ import annotations

import hashlib
import re

HEX_DIGITS = {"sha256": 64, "md5": 32}
ALGORITHMS = tuple(HEX_DIGITS)
_HEX = re.compile(r"[0-9a-f]+")


def parse_checksum(algorithm: str, value: str) -> str:
    """Normalise an input column's digest to ``"ALGO:hex"``.

    Accepts upper- or lower-case hex and an optional ``ALGO:`` prefix.

    Raises:
        ValueError: with a message fit for the manifest.
    """
    text = value.strip().lower()
    if text.startswith(algorithm + ":"):
        text = text[len(algorithm) + 1:]
    digits = HEX_DIGITS[algorithm]
    if len(text) != digits or not _HEX.fullmatch(text):
        raise ValueError(f"{algorithm} must be {digits} hexadecimal digits, not {value.strip()[:80]!r}")
    return f"{algorithm}:{text}"


class Verifier:
    """Checks a body against ``Task.checksum`` while it streams (a no-op when there is none)."""

    def __init__(self, checksum: str | None) -> None:
        self.algorithm, _, self.expected = (checksum or "").partition(":")
        self._hash = hashlib.md5(usedforsecurity=False) if self.algorithm == "md5" else None

    def update(self, chunk: bytes) -> None:
        if self._hash is not None:
            self._hash.update(chunk)

    def mismatch(self, sha256_hex: str) -> str | None:
        """A message if the body does not match, else None; ``sha256_hex`` is the body's sha256."""
        if not self.expected:
            return None
        actual = sha256_hex if self._hash is None else self._hash.hexdigest()
        if actual == self.expected:
            return None
        return f"{self.algorithm} mismatch: expected {self.expected}, got {actual}"


def file_matches(path: str, checksum: str) -> bool:
    """Whether an existing file has the expected ``"ALGO:hex"`` digest."""
    algorithm, _, expected = checksum.partition(":")
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest() == expected


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
