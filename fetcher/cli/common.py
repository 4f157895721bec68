"""What the ``fetcher`` command and its ``serve`` and ``work`` subcommands share.

The argument parser that reports a usage error as one line, the flags of run
reporting, and small helpers; the flags that are options come from the options
table (cli/flags.py). Nothing heavy is
imported here either: the gevent backend must monkey-patch before requests loads.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import NoReturn, TypeVar

from fetcher.errors import ConfigError
from fetcher.options.values import non_negative_int, positive_int

__all__ = ["Parser", "add_run_reporting", "chain", "count_lines", "non_negative_int", "positive_int",
           "prepare_backend"]

_T = TypeVar("_T")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, then exits 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def add_run_reporting(parser: argparse.ArgumentParser, rerun: str) -> None:
    """--no-retry-failed, -q and -v: shared by ``fetcher`` and ``fetcher serve``."""
    parser.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                        help=f"on a {rerun}, keep URLs that failed before as failed instead of trying them again")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    noise.add_argument("-v", "--verbose", action="store_true", help="print a line for every URL, not only failures")


def prepare_backend(name: str) -> None:
    """Process-wide setup first, before anything imports requests (gevent monkey-patches here)."""
    from fetcher.backends import prepare_process

    prepare_process(name)


def chain(first: _T | None, rest: Iterator[_T]) -> Iterator[_T]:
    """``first`` (already read, to open the input early) and then ``rest``."""
    if first is not None:
        yield first
        yield from rest


def count_lines(path: str, input_format: str = "txt") -> int | None:
    """An upper bound on the URL count for the bar; None for stdin or a slow source."""
    if path == "-" or not os.path.isfile(path):
        return None
    if input_format == "parquet":
        from fetcher.sources.parquet import count_rows

        return count_rows(path)
    count = 0
    with open(path, "rb") as handle:
        if handle.read(2) == b"\x1f\x8b":  # gzip: counting would mean decompressing it all
            return None
        handle.seek(0)
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count or None
