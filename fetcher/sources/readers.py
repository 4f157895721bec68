"""Input files in four formats, read lazily as numbered rows.

- ``txt``: one URL per line; blank lines and ``#`` comments are skipped.
- ``csv`` / ``tsv``: a header row naming a ``url`` column (any case); optional
  ``filename``, ``sha256`` or ``md5`` columns; any other column is carried into
  the manifest. TSV uses the same quoting rules as CSV (what pandas and
  spreadsheets write).
- ``jsonl`` (also ``.ndjson``): one JSON object per line with a ``url`` key,
  the same optional keys, any other keys carried.

The format comes from the extension (``.txt``, ``.csv``, ``.tsv``, ``.jsonl``,
``.ndjson``, each optionally ``.gz``); anything else, and stdin, is ``txt``,
unless ``--input-format`` says otherwise. Gzip is recognised by its magic
bytes, so ``.gz`` files and gzipped stdin are read transparently, streamed.

Rows are produced one at a time; nothing here holds the file, nor more than
``LINE_LIMIT`` of one line: a longer line becomes one ``Row`` with an error
(its first characters and its length; see lines.py).
A row that cannot be read is a ``Row`` with an ``error``; a file whose header
(or first JSON object) has no ``url``, or that is not text at all (a binary
file), is a ConfigError, raised by the first ``next()`` so that it stops the
run before anything is written.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import IO, Any

from fetcher.errors import ConfigError
from fetcher.sources.lines import LineTooLong, TextLines, numbered_lines, refuse_binary
from fetcher.sources.rows import Row

__all__ = ["Row", "detect_format", "read_rows", "renamed_url", "text_rows"]

FORMAT_BY_SUFFIX = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                    ".parquet": "parquet"}
GZIP_MAGIC = b"\x1f\x8b"
BOM = "\ufeff"
MAX_RAW = 300  # characters of an unreadable row kept for the manifest
# Longest line read whole: a text list holds one URL a line (at most 8,192 characters, sources.py);
# a CSV/JSONL row also carries its other columns.
MAX_DEPTH = 64  # JSON nesting of one input row; far beyond any real row's, far below the recursion limit
LINE_LIMIT = {"txt": 64 * 1024, "csv": 1 << 20, "tsv": 1 << 20, "jsonl": 1 << 20}


def detect_format(path: str, requested: str = "auto") -> str:
    """The format to read ``path`` with: ``requested`` unless it is ``auto``."""
    if requested != "auto":
        return requested
    if path == "-":
        return "txt"
    stem = path[:-3] if path.lower().endswith(".gz") else path
    return FORMAT_BY_SUFFIX.get(os.path.splitext(stem)[1].lower(), "txt")


def read_rows(path: str, input_format: str = "auto", url_column: str = "url") -> Iterator[Row]:
    """Yield the rows of an input file (``-`` for stdin), lazily.

    ``url_column`` names the column (any case) that holds the URL; in the rows
    it is called ``url``. Parquet is read by ``parquet.py``.

    Raises:
        ConfigError: the file cannot be opened or is not readable at all, or a
            CSV/TSV header (JSONL first object, parquet schema) has no ``url_column``.
    """
    fmt = detect_format(path, input_format)
    if fmt == "parquet":
        from fetcher.sources.parquet import parquet_rows

        yield from parquet_rows(path, url_column)
        return
    reader = _READERS[fmt]
    with _open_binary(path) as stream:
        refuse_binary(stream, path)
        rows = reader(stream, path, url_column) if fmt != "txt" else reader(stream, path)
        try:
            guarded = _guarded(rows, path)
            yield from guarded if url_column.lower() == "url" else (renamed_url(row, url_column) for row in guarded)
        finally:
            rows.close()  # before the file closes, also when the caller stops early


def renamed_url(row: Row, url_column: str) -> Row:
    """``row`` with its ``url_column`` (any case) first, as ``url``; the other columns as they were."""
    wanted = url_column.lower()
    key = next((name for name in row.fields if str(name).lower() == wanted), None)
    if key is None:
        return row
    fields = {"url": row.fields[key]}
    fields.update((name, value) for name, value in row.fields.items() if name != key)
    return Row(row.line, fields, row.error, row.raw)


def _guarded(rows: Iterator[Row], path: str) -> Iterator[Row]:
    last = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated .gz
            if last == 0:
                raise ConfigError(f"cannot read input {path!r}: {exc}") from None
            # Rows already read are running: end the input with one failed record.
            yield Row(last + 1, error=f"cannot read the rest of the input: {exc}", raw=path)
            return
        last = row.line
        yield row


@contextmanager
def _open_binary(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        raw: IO[bytes] = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")
        except OSError as exc:
            raise ConfigError(f"cannot read URL list {path!r}: {exc.strerror or exc}") from None
    try:
        if not hasattr(raw, "peek"):  # stdin replaced by a plain BytesIO (tests, embedding)
            raw = io.BufferedReader(raw)  # type: ignore[type-var]
        if raw.peek(2)[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield io.BufferedReader(unzipped)  # peek(), for refuse_binary
        else:
            yield raw
    finally:
        if path != "-":
            raw.close()


def _too_long(number: int, long: LineTooLong, limit: int, url_line: bool = False) -> Row:
    raw = long.start.decode("utf-8", "backslashreplace")
    what = "a URL" if url_line else "a row"
    return Row(number, error=f"line of {long.length:,} bytes is longer than the {limit:,} {what} may have",
               raw=raw, length=long.length, url_line=url_line)


def text_rows(lines: Iterator[tuple[int, bytes | LineTooLong]] | Any) -> Iterator[Row]:
    """Rows of a plain list from numbered raw lines: blank lines and ``#`` comments skipped."""
    for number, raw in lines:
        if isinstance(raw, LineTooLong):
            yield _too_long(number, raw, LINE_LIMIT["txt"], url_line=True)
            continue
        line = raw.strip()
        if number == 1 and line.startswith(BOM.encode()):
            line = line[3:].strip()
        if not line or line.startswith(b"#"):
            continue
        # surrogateescape keeps undecodable bytes visible, so they can be reported, not guessed.
        text = line.decode("utf-8", "surrogateescape")
        yield Row(number, {"url": text}, raw=text)


def _txt(stream: IO[bytes], path: str) -> Generator[Row, None, None]:
    yield from text_rows(numbered_lines(stream, LINE_LIMIT["txt"]))


def _csv(stream: IO[bytes], path: str, url_column: str = "url",
         dialect: type[csv.Dialect] = csv.excel) -> Generator[Row, None, None]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    lines = TextLines(text, LINE_LIMIT["csv"])
    try:
        reader = csv.reader(lines, dialect)
        try:
            header = next(reader, None)
        except LineTooLong as long:
            raise ConfigError(f"input {path!r}: its header row is {long.length:,} characters long") from None
        if header is None:
            return
        columns = _check_header([name.strip() for name in header], path, url_column)
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except LineTooLong as long:  # the reader starts afresh on the next line
                yield _too_long(long.number, long, LINE_LIMIT["csv"])
                continue
            except csv.Error as exc:
                yield Row(lines.number, error=f"unreadable row: {exc}")
                continue
            if values:  # the csv module gives [] for a blank line
                yield _csv_row(lines.number, columns, values, dialect.delimiter)
    finally:
        text.detach()  # leave the byte stream (maybe stdin) to its owner


def _tsv(stream: IO[bytes], path: str, url_column: str = "url") -> Generator[Row, None, None]:
    yield from _csv(stream, path, url_column, csv.excel_tab)


def _check_header(columns: list[str], path: str, url_column: str = "url") -> list[str]:
    lowered = [name.lower() for name in columns]
    if url_column.lower() not in lowered:
        shown = ", ".join(repr(name) for name in columns[:10]) or "none"
        raise ConfigError(f"input {path!r} has no {url_column!r} column in its header row (columns: {shown})")
    named = [name for name in lowered if name]
    if len(set(named)) != len(named):
        twice = sorted({name for name in named if named.count(name) > 1})
        raise ConfigError(f"input {path!r} names a column twice: {', '.join(twice)}")
    return columns


def _csv_row(line: int, columns: list[str], values: list[str], delimiter: str) -> Row:
    raw = delimiter.join(values)[:MAX_RAW]
    if len(values) > len(columns):
        return Row(line, error=f"{len(values)} fields, but the header has {len(columns)}", raw=raw)
    # A short row leaves its last columns out; a column with no name is dropped.
    fields = {name: value for name, value in zip(columns, values) if name}
    return Row(line, fields, raw=raw)


def _jsonl(stream: IO[bytes], path: str, url_column: str = "url") -> Generator[Row, None, None]:
    first = True
    for number, raw_line in numbered_lines(stream, LINE_LIMIT["jsonl"]):
        if isinstance(raw_line, LineTooLong):
            first = False
            yield _too_long(number, raw_line, LINE_LIMIT["jsonl"])
            continue
        line = raw_line.strip()
        if first and line.startswith(BOM.encode()):
            line = line[3:].strip()
        if not line:
            continue
        raw = line[:MAX_RAW].decode("utf-8", "backslashreplace")
        try:
            value = json.loads(line, parse_constant=_reject_constant)
            _check_depth(value)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN, too deep
            first = False
            yield Row(number, error=f"not valid JSON: {exc}", raw=raw)
            continue
        except RecursionError:  # json's C scanner: a line of 100,000 '[' (no traceback, and the next rows go on)
            first = False
            yield Row(number, error=f"not valid JSON: nested deeper than {MAX_DEPTH} levels", raw=raw)
            continue
        if not isinstance(value, dict):
            first = False
            yield Row(number, error=f"expected a JSON object, got {type(value).__name__}", raw=raw)
            continue
        if first and url_column.lower() not in (str(key).lower() for key in value):
            keys = ", ".join(repr(key) for key in list(value)[:10]) or "none"
            raise ConfigError(f"input {path!r}: the first JSON object has no {url_column!r} key (keys: {keys})")
        first = False
        yield Row(number, value, raw=raw)


def _check_depth(value: Any) -> None:
    """ValueError if ``value`` nests deeper than MAX_DEPTH: every later json.dumps of it (manifest,
    journal, broker) recurses as deep, and must never meet the interpreter's recursion limit."""
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [child for item in level if isinstance(item, (list, dict))
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return
    if any(isinstance(item, (list, dict)) for item in level):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; carried into the manifest they would make it invalid.
    raise ValueError(f"{name} is not a JSON value")


_READERS: dict[str, Callable[..., Generator[Row, None, None]]] = {
    "txt": _txt, "csv": _csv, "tsv": _tsv, "jsonl": _jsonl,
}
