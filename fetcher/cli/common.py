"""What the ``fetcher`` command and its ``serve`` and ``work`` subcommands share.

The argument parser that reports a usage error as one line, the flags of run
reporting, and small helpers; the flags that are options come from the options
table (cli/flags.py). Nothing heavy is
imported here either: the gevent backend must monkey-patch before requests loads.
"""

from __future__ import annotations

import argparse
from typing import NoReturn, TextIO

from fetcher.errors import ConfigError
from fetcher.options.values import non_negative_int, positive_int

__all__ = ["Parser", "add_run_reporting", "non_negative_int", "positive_int", "prepare_backend"]


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
    noise.add_argument("-v", "--verbose", action="store_true", help="print a line for every URL on standard output, not only "
                                                                  "failures")
    parser.add_argument("--log", metavar="FILE", help="append a line for every URL and the summary to FILE, with "
                                                      "the time, whatever -q or -v (created if missing)")


def open_log(path: str | None) -> TextIO | None:
    """The ``--log`` file, opened to append, one line at a time (``tail -f`` sees each as it comes).

    Raises:
        ConfigError: it cannot be opened (a folder, a missing folder, no permission).
    """
    if path is None:
        return None
    try:
        return open(path, "a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise ConfigError(f"cannot open the --log file {path!r}: {exc.strerror or exc}") from None


def prepare_backend(name: str) -> None:
    """Process-wide setup first, before anything imports requests (gevent monkey-patches here)."""
    from fetcher.backends import prepare_process

    prepare_process(name)
