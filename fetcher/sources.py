"""Read URL lists lazily, validate and canonicalise each line, drop duplicates.

A list of millions of lines is never held in memory: lines are read one at a
time, and duplicates are found through a set of 8-byte digests (about 60 MB for
a million URLs) rather than of the URLs themselves.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

from fetcher.errors import ConfigError
from fetcher.models import ErrorKind, Result, Task, failed
from fetcher.naming import name_for_url

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 8192
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


class InvalidURL(ValueError):
    """A line that is not a fetchable URL; ``kind`` says whether it is malformed or a wrong scheme."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message


def canonical_url(text: str) -> str:
    """Validate an http(s) URL and return its canonical form.

    Lower-cases scheme and host, drops a default port and the fragment (never
    sent to a server), and keeps path and query as given.

    Raises:
        InvalidURL: with kind ``unsupported-scheme`` or ``invalid-url``.
    """
    if len(text) > MAX_URL_LENGTH:
        raise InvalidURL(ErrorKind.INVALID_URL, f"URL longer than {MAX_URL_LENGTH} characters")
    if _BAD_CHARS.search(text):
        raise InvalidURL(ErrorKind.INVALID_URL, "URL contains whitespace or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(ErrorKind.INVALID_URL, f"cannot parse URL: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURL(ErrorKind.INVALID_URL, "not a URL: it has no http:// or https:// scheme")
    if scheme not in ALLOWED_SCHEMES:
        raise InvalidURL(ErrorKind.UNSUPPORTED_SCHEME, f"scheme {scheme!r} is not fetched; only http and https are")
    host = parts.hostname
    if not host:
        raise InvalidURL(ErrorKind.INVALID_URL, "URL has no host")
    if parts.username is not None or parts.password is not None:
        netloc_auth = parts.netloc.rsplit("@", 1)[0] + "@"
    else:
        netloc_auth = ""
    host_text = f"[{host}]" if ":" in host else host
    netloc = netloc_auth + host_text + (f":{port}" if port is not None and port != DEFAULT_PORTS[scheme] else "")
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line) from a file, or from stdin for ``-``.

    Raises:
        ConfigError: the file cannot be opened.
    """
    if path == "-":
        yield from _numbered(sys.stdin.buffer)
        return
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot read URL list {path!r}: {exc.strerror or exc}") from None
    with handle:
        yield from _numbered(handle)


def _numbered(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(handle, start=1):
        yield number, raw


def iter_inputs(lines: Iterable[tuple[int, bytes]],
                counts: dict[str, int] | None = None, dedupe: bool = True) -> Iterator[Task | Result]:
    """Turn numbered raw lines into Tasks, or failed Results for bad lines.

    Blank lines and ``#`` comments are skipped. With ``dedupe``, a URL seen
    before is skipped too (and counted in ``counts["duplicates"]``), so each
    unique URL yields exactly one item; without it (the journal dedupes on
    disk instead of in memory) every line yields an item.
    """
    if counts is None:
        counts = {}
    counts.setdefault("duplicates", 0)
    seen: set[int] = set()
    index = 0
    for number, raw in lines:
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        digest = int.from_bytes(hashlib.blake2b(line, digest_size=8).digest(), "big")
        try:
            text = line.decode("utf-8")
            url = canonical_url(text)
            digest = int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "big")
        except UnicodeDecodeError:
            item: Task | Result = failed(
                line.decode("utf-8", "backslashreplace"), ErrorKind.INVALID_URL,
                f"line {number}: not valid UTF-8", attempts=0, index=index)
        except InvalidURL as exc:
            item = failed(text, exc.kind, f"line {number}: {exc.message}", attempts=0, index=index)
        else:
            item = Task(url=url, name=name_for_url(url), index=index)
        if dedupe:
            if digest in seen:
                counts["duplicates"] += 1
                continue
            seen.add(digest)
        index += 1
        yield item
