"""The ``fetcher`` command: argparse → Options → engine → exit status.

Exit status: 0 every URL succeeded, 1 some failed, 2 usage or configuration
error, 130 interrupted. Nothing heavy is imported before the arguments are
parsed, so the gevent backend can monkey-patch before requests is loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn

from fetcher.errors import ConfigError

if TYPE_CHECKING:
    from fetcher.options import Options

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, then exits 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from fetcher import __version__
    from fetcher.backends import BACKENDS

    parser = _Parser(
        prog="fetcher",
        description="Download every URL of a list concurrently into a folder, with a manifest.",
        epilog="Exit status: 0 all succeeded, 1 some URLs failed, 2 usage error, 130 interrupted.",
    )
    parser.add_argument("input", help="text file with one URL per line ('#' comments allowed); '-' reads stdin")
    parser.add_argument("--backend", default="thread", metavar="NAME",
                        help=f"how downloads run concurrently: {', '.join(BACKENDS)} (default: thread)")
    parser.add_argument("--pool", type=_positive_int, default=8, metavar="N",
                        help="number of concurrent downloads (default: 8)")
    parser.add_argument("-o", "--out", default="downloads", metavar="DIR",
                        help="output folder (default: ./downloads)")
    parser.add_argument("--manifest", metavar="PATH",
                        help="where to write the JSONL manifest (default: OUT/manifest.jsonl)")
    parser.add_argument("--timeout", default="10,30", metavar="S",
                        help="connect and read timeout in seconds: one number for both, or CONNECT,READ "
                             "(default: 10,30)")
    parser.add_argument("--retries", type=_non_negative_int, default=3, metavar="N",
                        help="retries after a connection error, timeout, truncated body or 5xx (default: 3)")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    noise.add_argument("-v", "--verbose", action="store_true", help="print a line for every URL, not only failures")
    parser.add_argument("--version", action="version", version=f"fetcher {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status instead of exiting (tests call this)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except ConfigError as exc:
        print(f"fetcher: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fetcher: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    _prepare_backend(args.backend)
    from fetcher.options import Options

    options = Options.create(backend=args.backend, pool=args.pool, out=args.out,
                             manifest=args.manifest, timeout=args.timeout, retries=args.retries)
    from fetcher.backends import get_backend

    get_backend(options.backend)  # an unknown name is a usage error before anything is written
    return _run(args, options)


def _prepare_backend(name: str) -> None:
    """Process-wide setup first, before anything imports requests (gevent monkey-patches here)."""
    from fetcher.backends import prepare_process

    prepare_process(name)


def _run(args: argparse.Namespace, options: Options) -> int:
    from fetcher import engine, sources
    from fetcher.collector import Collector
    from fetcher.progress import Progress

    lines = sources.read_lines(args.input)
    first = next(lines, None)  # opens the file now: a missing file is a usage error
    total = _count_lines(args.input)
    show_bar = not args.quiet and sys.stderr.isatty()
    collector = Collector(options.manifest_path, Progress(total, enabled=show_bar),
                          verbose=args.verbose, quiet=args.quiet)
    counts: dict[str, int] = {}
    items = sources.iter_inputs(_chain(first, lines), counts)
    interrupted = False
    try:
        engine.run(items, options, collector)
    except KeyboardInterrupt:
        interrupted = True
    summary = collector.close(interrupted=interrupted)
    summary.duplicates = counts.get("duplicates", 0)
    if not args.quiet:
        print(summary.describe(options.backend, options.pool))
    return summary.exit_code


def _chain(first: tuple[int, bytes] | None,
           rest: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    if first is not None:
        yield first
        yield from rest


def _count_lines(path: str) -> int | None:
    """An upper bound on the URL count for the bar; None for stdin or a slow source."""
    if path == "-" or not os.path.isfile(path):
        return None
    count = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count or None
