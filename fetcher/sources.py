"""Turn input rows into Tasks: validate and canonicalise URLs, drop duplicates, name files.

A list of millions of lines is never held in memory: rows are read one at a
time (``inputs.py``), and duplicates are found through a set of 8-byte digests
(about 60 MB for a million URLs) rather than of the URLs themselves. Names
chosen by a ``filename`` column are remembered the same way, and only those,
so that two rows can never claim one file.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO
from functools import lru_cache
from urllib.parse import SplitResult, urlsplit, urlunsplit

from fetcher.checksum import ALGORITHMS, parse_checksum
from fetcher.errors import ConfigError
from fetcher.filenames import clean_user_path
from fetcher.inputs import Row, text_rows
from fetcher.models import ErrorKind, Result, Task, failed, input_extra
from fetcher.naming import initial_name

SPECIAL_COLUMNS = ("url", "filename", "sha256", "md5")
ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 8192
MAX_SHOWN = 200  # characters of a bad line kept in the manifest, the journal and on screen
# The same set as str.isspace() plus C0 controls and DEL (re's \s is Py_UNICODE_ISSPACE), in C.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


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
    if _SPACE_OR_CONTROL.search(text):
        raise InvalidURL(ErrorKind.INVALID_URL, "URL contains whitespace or control characters")
    try:
        parts = urlsplit(text)
        host, port, netloc_auth = _netloc_parts(parts.netloc)
    except ValueError as exc:
        raise InvalidURL(ErrorKind.INVALID_URL, f"cannot parse URL: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURL(ErrorKind.INVALID_URL, "not a URL: it has no http:// or https:// scheme")
    if scheme not in ALLOWED_SCHEMES:
        raise InvalidURL(ErrorKind.UNSUPPORTED_SCHEME, f"scheme {scheme!r} is not fetched; only http and https are")
    if not host:
        raise InvalidURL(ErrorKind.INVALID_URL, "URL has no host")
    host_text = f"[{host}]" if ":" in host else host
    netloc = netloc_auth + host_text + (f":{port}" if port is not None and port != DEFAULT_PORTS[scheme] else "")
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


@lru_cache(maxsize=4096)
def _netloc_parts(netloc: str) -> tuple[str | None, int | None, str]:
    """(host, port, ``user:password@`` or ``""``) of a netloc; raises ValueError for a bad port.

    Cached: a list holds many URLs per host, and urllib's netloc properties
    parse the netloc again on each access (a few microseconds per URL).
    """
    parts = SplitResult("", netloc, "", "", "")
    port = parts.port
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if parts.username is not None or parts.password is not None else ""
    return parts.hostname, port, auth


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


def iter_inputs(lines: Iterable[tuple[int, bytes]], counts: dict[str, int] | None = None,
                naming: str = "url", dedupe: bool = True) -> Iterator[Task | Result]:
    """Turn numbered raw lines of a plain list into Tasks, or failed Results for bad lines."""
    return iter_rows(text_rows(iter(lines)), counts, naming, dedupe)


def iter_rows(rows: Iterable[Row], counts: dict[str, int] | None = None,
              naming: str = "url", dedupe: bool = True) -> Iterator[Task | Result]:
    """Turn input rows into Tasks, or failed Results for bad rows, lazily.

    With ``dedupe``, a URL seen before is skipped (and counted in
    ``counts["duplicates"]``), so each unique URL yields exactly one item; its
    first row decides its name, checksum and carried columns. Without it (the
    journal dedupes on disk instead of in memory), every row yields an item.
    Rows that cannot be read at all are never merged as duplicates: each keeps
    its own line number.

    Args:
        rows: from ``inputs.read_rows`` (or ``inputs.text_rows``).
        counts: receives ``duplicates``.
        naming: a ``--naming`` value, already checked by ``Options.create``.
    """
    if counts is None:
        counts = {}
    counts.setdefault("duplicates", 0)
    seen: set[int] = set()
    names: set[int] = set()
    index = 0
    for row in rows:
        column, meta = _split(row.fields)
        key, item = _url_of(row, column, meta, index)
        if key is not None and dedupe:
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
        work = _task(row, item, column, meta, index, naming, names) if isinstance(item, str) else item
        index += 1
        yield work


def row_item(row: Row, index: int, naming: str, names: set[int]) -> Task | Result:
    """One row as a Task, or a failed Result: what ``iter_rows`` does, without deduplication.

    For the Python API, which keys its own bookkeeping by canonical URL.
    ``names`` collects the ``filename`` values claimed so far.
    """
    column, meta = _split(row.fields)
    item = _url_of(row, column, meta, index)[1]
    return _task(row, item, column, meta, index, naming, names) if isinstance(item, str) else item


def _url_of(row: Row, column: dict[str, Any], meta: dict[str, Any],
            index: int) -> tuple[int | None, str | Result]:
    """(dedup key, canonical URL), or (key or None, failed Result)."""
    extra = input_extra(meta) if _all_text(meta) else {}  # never an unwritable manifest line
    if row.error is not None:
        return None, _bad_row(row, row.error, index, extra)
    text = column.get("url")
    if text is None or (isinstance(text, str) and not text.strip()):
        return None, _bad_row(row, "no url", index, extra)
    if not isinstance(text, str):
        return None, _bad_row(row, f"url must be a string, not {type(text).__name__}", index, extra)
    text = text.strip()
    # A bad line's key is the digest of its text; a good one's, of its canonical URL (computed only then).
    if not _is_text(text):
        return _text_key(text), failed(_display(text), ErrorKind.INVALID_URL, f"line {row.line}: not valid UTF-8",
                                       attempts=0, index=index, extra=extra)
    try:
        url = canonical_url(text)
    except InvalidURL as exc:
        return _text_key(text), failed(_display(text), exc.kind, f"line {row.line}: {exc.message}", attempts=0,
                                       index=index, extra=extra)
    return _digest(url.encode()), url


def _text_key(text: str) -> int:
    return _digest(text.encode("utf-8", "surrogatepass"))


def _task(row: Row, url: str, column: dict[str, Any], meta: dict[str, Any], index: int,
          naming: str, names: set[int]) -> Task | Result:
    """The Task for a valid URL, or a failed Result for a bad checksum, filename or column."""
    extra = input_extra(meta)
    if meta and not _all_text(meta):
        return failed(url, ErrorKind.INVALID_INPUT, f"line {row.line}: a column is not valid UTF-8",
                      attempts=0, index=index)
    try:
        checksum = _checksum(column)
        name = _filename(column, names)
    except ValueError as exc:
        return failed(url, ErrorKind.INVALID_INPUT, f"line {row.line}: {exc}", attempts=0, index=index,
                      extra=extra)
    provisional = False
    if name is None:
        name, provisional = initial_name(url, index, naming)
    return Task(url=url, name=name, index=index, checksum=checksum, meta=meta or None,
                provisional_name=provisional)


def _split(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the columns fetcher reads, by lower-case name; every other column, as named)."""
    column: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in fields.items():
        lowered = str(key).strip().lower()
        if lowered in SPECIAL_COLUMNS and lowered not in column:
            column[lowered] = value
        else:
            meta[str(key)] = value
    return column, meta


def _checksum(column: dict[str, Any]) -> str | None:
    """``"ALGO:hex"`` from a sha256 (preferred) or md5 column; raise ValueError if malformed."""
    for algorithm in ALGORITHMS:
        value = column.get(algorithm)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ValueError(f"{algorithm} must be a string, not {type(value).__name__}")
        return parse_checksum(algorithm, value)
    return None


def _filename(column: dict[str, Any], names: set[int]) -> str | None:
    """The safe name a filename column asks for; raise ValueError if unusable or already taken."""
    value = column.get("filename")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"filename must be a string, not {type(value).__name__}")
    name = clean_user_path(value) if _is_text(value) else ""
    if not name:
        raise ValueError(f"filename {_display(value)[:100]!r} leaves no usable file name")
    # Case-folded, so that two rows cannot share a file on macOS or Windows either.
    key = _digest(name.casefold().encode("utf-8"))
    if key in names:
        raise ValueError(f"filename {name!r} is already used by an earlier row")
    names.add(key)
    return name


def _bad_row(row: Row, message: str, index: int, extra: dict[str, Any]) -> Result:
    return failed(_display(row.raw), ErrorKind.INVALID_INPUT, f"line {row.line}: {message}",
                  attempts=0, index=index, extra=extra)


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _is_text(text: str) -> bool:
    """False when undecodable input bytes (or lone surrogates) hide in the text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_text(meta: dict[str, Any]) -> bool:
    """Whether every key and value can be written to the UTF-8 manifest."""
    for key, value in meta.items():
        if not _is_text(key):
            return False
        if isinstance(value, str):
            if not _is_text(value):
                return False
        elif isinstance(value, (list, dict)) and not _is_text(json.dumps(value, ensure_ascii=False)):
            return False
    return True


def _display(text: str) -> str:
    """A bad line as the manifest, the journal and the screen show it: undecodable bytes as
    ``\\xff``, and a long one cut to its first ``MAX_SHOWN`` characters plus its length (a
    50 MB line must not be copied three times)."""
    if len(text) > MAX_SHOWN:
        text = f"{text[:MAX_SHOWN]}... ({len(text):,} characters)"
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
