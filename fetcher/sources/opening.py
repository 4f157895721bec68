"""Open a run's input: the one set-up of ``fetcher INPUT`` and ``fetcher serve INPUT``.

Reads the first row at once, so a missing file, an unreadable format or a missing
URL column is a usage error before anything else happens; counts what the bar's
total can be told cheaply; and hands the rows on as the engine's items, lazily.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from fetcher.models import FetchTask, Result
from fetcher.sources import readers
from fetcher.sources.tasks import iter_rows

if TYPE_CHECKING:
    from fetcher.options import Options

_T = TypeVar("_T")


@dataclass
class OpenInput:
    """An opened input: ``items`` for the engine, and ``total``, an upper bound on their count
    for the bar (None for stdin, a gzip file, or where counting would mean reading it all)."""

    items: Iterator[FetchTask | Result]
    total: int | None


def open_input(path: str, options: Options) -> OpenInput:
    """Open ``path`` (``-``: stdin) as ``options.source`` says; the journal dedupes, so rows are not.

    Raises:
        ConfigError: the file is missing or unreadable, or has no URL column.
    """
    source = options.source
    rows = readers.read_rows(path, source.input_format, source.url_column)
    first = next(rows, None)  # opens the file now: a missing file or 'url' column is a usage error
    total = count_rows(path, readers.detect_format(path, source.input_format))
    return OpenInput(iter_rows(_chain(first, rows), naming=options.output.naming, dedupe=False), total)


def count_rows(path: str, input_format: str) -> int | None:
    """An upper bound on the URL count for the bar; None for stdin or a slow source."""
    if path == "-" or not os.path.isfile(path):
        return None
    if input_format == "parquet":
        from fetcher.sources.parquet import count_rows as parquet_rows

        return parquet_rows(path)
    count = 0
    with open(path, "rb") as handle:
        if handle.read(2) == b"\x1f\x8b":  # gzip: counting would mean decompressing it all
            return None
        handle.seek(0)
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count or None


def _chain(first: _T | None, rest: Iterator[_T]) -> Iterator[_T]:
    """``first`` (already read, to open the input early) and then ``rest``."""
    if first is not None:
        yield first
        yield from rest
