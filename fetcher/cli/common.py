"""What the ``fetcher`` command and its ``serve`` and ``work`` subcommands share.

The argument parser that reports a usage error as one line, the flags of run
reporting, and small helpers; the flags that are options come from the options
table (cli/flags.py). Nothing heavy is
imported here either: the gevent backend must monkey-patch before requests loads.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

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
    noise.add_argument("-v", "--verbose", action="store_true", help="print a line for every URL, not only failures")


def prepare_backend(name: str) -> None:
    """Process-wide setup first, before anything imports requests (gevent monkey-patches here)."""
    from fetcher.backends import prepare_process

    prepare_process(name)
