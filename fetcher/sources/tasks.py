"""Turn input lines into Tasks: validate and canonicalise URLs, drop duplicates, name files.

One constructor, ``TaskMaker``, for every way in: a reader's rows (``iter_rows``) and
the Python API's Tasks (api.py) become ``Line`` values and are built by the same code.

A list of millions of lines is never held in memory: rows are read one at a
time (``readers.py``), and duplicates are found through a set of 8-byte digests
(about 60 MB for a million URLs) rather than of the URLs themselves. Names
chosen by a ``filename`` column are remembered the same way, and only those,
so that two rows can never claim one file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from fetcher.download.checksum import ALGORITHMS, parse_checksum
from fetcher.files.filenames import clean_user_path
from fetcher.sources.rows import Row
from fetcher.models import ErrorKind, Result, FetchTask, failed, input_extra
from fetcher.files.naming import initial_name
from fetcher.redact import cut

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
        raise InvalidURL(ErrorKind.UNSUPPORTED_SCHEME, f"scheme {scheme!r} is not fetched: only http and https URLs are")
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


@dataclass(frozen=True, slots=True)
class Line:
    """What one line of input asks for, whoever read it: a reader's ``Row``, or a Python API ``Task``.

    Attributes:
        number: 1-based line number (the API: the item's position + 1), for messages.
        raw: the line's text, shown in the manifest when it has no usable url.
        url: the url as given (anything: it is checked here).
        name: a ``filename`` column or ``Task.name``: the file's path, to be made safe.
        checksum: ``(algorithm, value)`` from a ``sha256``/``md5`` column, or the API's ``"ALGO:HEX"``.
        meta: the other columns, carried into the manifest under ``"input"``.
        headers: request headers for this URL only (the API).
        error: why a reader could not read the row at all, or None.
    """

    number: int
    raw: str
    url: Any = None
    name: Any = None
    checksum: tuple[str, Any] | str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] | None = None
    error: str | None = None
    length: int = 0  # an over-long line's whole length in bytes (raw holds its start)
    error_kind: ErrorKind = ErrorKind.INVALID_INPUT


def line_of(row: Row) -> Line:
    """A reader's row as a Line: the columns fetcher reads taken out (by lower-case name), the rest carried."""
    column: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in row.fields.items():
        lowered = str(key).strip().lower()
        if lowered in SPECIAL_COLUMNS and lowered not in column:
            column[lowered] = value
        else:
            meta[str(key)] = value
    checksum = next(((algorithm, column[algorithm]) for algorithm in ALGORITHMS
                     if column.get(algorithm) not in (None, "")), None)
    return Line(row.line, row.raw, column.get("url"), column.get("filename"), checksum, meta, error=row.error,
                length=row.length, error_kind=ErrorKind.INVALID_URL if row.url_line else ErrorKind.INVALID_INPUT)


class TaskMaker:
    """The one way in for a task: readers' rows (``iter_rows``) and the Python API both build through it.

    ``check`` validates and canonicalises the URL (its digest is the key duplicates are
    found by); ``build`` completes the task: checksum, a safe name (remembering the
    names ``filename`` columns claim, so two lines never share a file), and the naming
    scheme's name otherwise. Anything unusable comes back as a failed Result, as data:
    ``attempts=0``, the line's number in the message.

    Args:
        naming: a ``--naming`` value, already checked by ``Options.create``.
    """

    def __init__(self, naming: str = "url") -> None:
        self.naming = naming
        self._names: set[int] = set()

    def make(self, line: Line, index: int) -> FetchTask | Result:
        """``check`` then ``build``: a FetchTask, or the failed Result for the line."""
        url = self.check(line, index)[1]
        return self.build(line, url, index) if isinstance(url, str) else url

    def check(self, line: Line, index: int) -> tuple[int | None, str | Result]:
        """(dedup key, canonical URL), or (key or None, failed Result)."""
        extra = input_extra(line.meta) if _all_text(line.meta) else {}  # never an unwritable manifest line
        if line.error is not None:
            return None, _bad_line(line, line.error, index, extra)
        text = line.url
        if text is None or (isinstance(text, str) and not text.strip()):
            return None, _bad_line(line, "no url", index, extra)
        if not isinstance(text, str):
            return None, _bad_line(line, f"url must be a string, not {type(text).__name__}", index, extra)
        text = text.strip()
        # A bad line's key is the digest of its text; a good one's, of its canonical URL (computed only then).
        if not _is_text(text):
            return _text_key(text), failed(_display(text), ErrorKind.INVALID_URL,
                                           f"line {line.number}: not valid UTF-8", attempts=0, index=index,
                                           extra=extra)
        try:
            url = canonical_url(text)
        except InvalidURL as exc:
            return _text_key(text), failed(_display(text), exc.kind, f"line {line.number}: {exc.message}",
                                           attempts=0, index=index, extra=extra)
        return _digest(url.encode()), url

    def build(self, line: Line, url: str, index: int) -> FetchTask | Result:
        """The FetchTask for a checked URL, or a failed Result for a bad checksum, filename or column."""
        meta = line.meta
        extra = input_extra(meta)
        if meta and not _all_text(meta):
            return failed(url, ErrorKind.INVALID_INPUT, f"line {line.number}: a column is not valid UTF-8",
                          attempts=0, index=index)
        try:
            checksum = _checksum(line.checksum)
            name = _filename(line.name, self._names)
        except ValueError as exc:
            return failed(url, ErrorKind.INVALID_INPUT, f"line {line.number}: {exc}", attempts=0, index=index,
                          extra=extra)
        provisional = False
        if name is None:
            name, provisional = initial_name(url, index, self.naming)
        return FetchTask(url=url, name=name, index=index, checksum=checksum, meta=meta or None,
                    provisional_name=provisional, headers=line.headers)


def iter_rows(rows: Iterable[Row], counts: dict[str, int] | None = None,
              naming: str = "url", dedupe: bool = True) -> Iterator[FetchTask | Result]:
    """Turn input rows into Tasks, or failed Results for bad rows, lazily.

    With ``dedupe``, a URL seen before is skipped (and counted in
    ``counts["duplicates"]``), so each unique URL yields exactly one item; its
    first row decides its name, checksum and carried columns. Without it (the
    journal dedupes on disk instead of in memory), every row yields an item.
    Rows that cannot be read at all are never merged as duplicates: each keeps
    its own line number.

    Args:
        rows: from ``readers.read_rows``.
        counts: receives ``duplicates``.
        naming: a ``--naming`` value, already checked by ``Options.create``.
    """
    if counts is None:
        counts = {}
    counts.setdefault("duplicates", 0)
    maker = TaskMaker(naming)
    seen: set[int] = set()
    index = 0
    for row in rows:
        line = line_of(row)
        key, url = maker.check(line, index)
        if key is not None and dedupe:
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
        yield maker.build(line, url, index) if isinstance(url, str) else url
        index += 1


def _text_key(text: str) -> int:
    return _digest(text.encode("utf-8", "surrogatepass"))


def _checksum(spec: tuple[str, Any] | str | None) -> str | None:
    """``"ALGO:hex"`` from a column's ``(algorithm, value)`` or the API's ``"ALGO:HEX"``; ValueError if malformed."""
    if spec is None:
        return None
    if isinstance(spec, str):
        algorithm, _, value = spec.partition(":")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"checksum must be 'sha256:HEX' or 'md5:HEX', not {spec[:80]!r}")
    else:
        algorithm, value = spec
    if not isinstance(value, str):
        raise ValueError(f"{algorithm} must be a string, not {type(value).__name__}")
    return parse_checksum(algorithm, value)


def _filename(value: Any, names: set[int]) -> str | None:
    """The safe name a filename column (or ``Task.name``) asks for; raise ValueError if unusable or taken."""
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


def _bad_line(line: Line, message: str, index: int, extra: dict[str, Any]) -> Result:
    return failed(_display(line.raw, line.length), line.error_kind, f"line {line.number}: {message}",
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


def _display(text: str, length: int = 0) -> str:
    """A bad line as the manifest, the journal and the screen show it: undecodable bytes as
    ``\\xff``, and a long one cut to its first ``MAX_SHOWN`` characters plus its length (a
    50 MB line must not be copied three times). ``length``: the whole line's length in bytes
    when the reader kept only its start."""
    if length:
        text = f"{cut(text, MAX_SHOWN)}... ({length:,} bytes)"  # cut: never half a password
    elif len(text) > MAX_SHOWN:
        text = f"{cut(text, MAX_SHOWN)}... ({len(text):,} characters)"
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
