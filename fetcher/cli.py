"""The ``fetcher`` command: argparse → Options → engine → exit status.

Exit status: 0 every URL succeeded, 1 some failed, 2 usage or configuration
error, 130 interrupted. Nothing heavy is imported before the arguments are
parsed, so the gevent backend can monkey-patch before requests is loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

from fetcher.errors import ConfigError

if TYPE_CHECKING:
    from fetcher.options import Options

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_T = TypeVar("_T")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, then exits 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def _whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}" if least
                                             else f"must be 0 or more, not {value}")
        return value
    return parse


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)


def build_parser() -> argparse.ArgumentParser:
    from fetcher import __version__
    from fetcher.backends import BACKENDS

    parser = _Parser(
        prog="fetcher",
        description="Download every URL of a list concurrently into a folder, with a manifest.",
        epilog="Exit status: 0 all succeeded, 1 some URLs failed, 2 usage error, 130 interrupted. "
               "Also: 'fetcher status', and distributed mode: 'fetcher serve' and 'fetcher work' "
               "(each has --help).",
    )
    parser.add_argument("input", help="URL list: text (one URL per line), CSV, TSV or JSONL with a 'url' "
                                      "column, optionally .gz; '-' reads stdin")
    parser.add_argument("--backend", default="thread", metavar="NAME",
                        help=f"how downloads run concurrently: {', '.join(BACKENDS)} (default: thread)")
    parser.add_argument("--pool", type=_positive_int, default=8, metavar="N",
                        help="number of concurrent downloads (default: 8)")
    parser.add_argument("--processes", type=_positive_int, default=0, metavar="N",
                        help="--backend process: worker processes the pool is spread over "
                             "(default: one per CPU, at most the pool)")
    parser.add_argument("-o", "--out", default="downloads", metavar="DIR",
                        help="output folder (default: ./downloads)")
    parser.add_argument("--manifest", metavar="PATH",
                        help="where to write the JSONL manifest (default: OUT/manifest.jsonl)")
    _add_fetching_rules(parser)
    _add_run_reporting(parser, "rerun")
    parser.add_argument("--version", action="version", version=f"fetcher {__version__}")
    _add_input_and_naming_arguments(parser)
    return parser


def _add_run_reporting(parser: argparse.ArgumentParser, rerun: str) -> None:
    """--no-retry-failed, -q and -v: shared by ``fetcher`` and ``fetcher serve``."""
    parser.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                        help=f"on a {rerun}, keep URLs that failed before as failed instead of trying them again")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    noise.add_argument("-v", "--verbose", action="store_true", help="print a line for every URL, not only failures")


def _add_fetching_rules(parser: argparse.ArgumentParser) -> None:
    retry = parser.add_argument_group("retries and deadlines")
    retry.add_argument("--timeout", default="10,30", metavar="S",
                       help="connect and read timeout in seconds: one number for both, or CONNECT,READ "
                            "(default: 10,30)")
    retry.add_argument("--retries", type=_non_negative_int, default=3, metavar="N",
                       help="retries after a connection error, timeout, truncated body, 408, 425, 429 or 5xx "
                            "(default: 3)")
    retry.add_argument("--backoff", type=float, default=0.5, metavar="S",
                       help="first retry delay, doubled on each retry, with jitter (default: 0.5)")
    retry.add_argument("--backoff-cap", type=float, default=30.0, metavar="S",
                       help="longest backoff between two retries (default: 30)")
    retry.add_argument("--max-retry-after", type=float, default=300.0, metavar="S",
                       help="longest Retry-After honoured; a host is paused that long at most (default: 300)")
    retry.add_argument("--max-time", type=float, default=0.0, metavar="S",
                       help="deadline for one whole download, connect included (default: none)")
    retry.add_argument("--min-speed", default="0", metavar="BYTES",
                       help="cut a download slower than BYTES/s over --min-speed-time (e.g. 1K; default: off)")
    retry.add_argument("--min-speed-time", type=float, default=10.0, metavar="S",
                       help="window for --min-speed (default: 10)")
    polite = parser.add_argument_group("politeness")
    polite.add_argument("--per-host", type=_non_negative_int, default=8, metavar="N",
                        help="most concurrent requests to one host, across all workers; 0: no cap (default: 8)")
    polite.add_argument("--delay", type=float, default=0.0, metavar="S",
                        help="least seconds between two requests to one host (default: 0)")
    polite.add_argument("--user-agent", default="", metavar="TEXT",
                        help="User-Agent header (default: fetcher/VERSION)")
    polite.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="extra request header; repeat for more")
    polite.add_argument("--cookies", metavar="FILE", help="Netscape/Mozilla cookies.txt file to send cookies from")
    polite.add_argument("--insecure", action="store_true",
                        help="do not verify TLS certificates (dangerous; off by default)")
    check = parser.add_argument_group("validation")
    check.add_argument("--max-size", default="0", metavar="SIZE",
                       help="largest body accepted, e.g. 10M or 1G, counted after decompression (default: none)")
    check.add_argument("--min-size", default="0", metavar="SIZE", help="smallest body accepted (default: 0)")
    check.add_argument("--accept", default="", metavar="TYPES",
                       help="accepted Content-Types, e.g. 'image/*,application/pdf'; images and PDFs must "
                            "also start with the right magic bytes (default: anything)")
    check.add_argument("--max-redirects", type=_non_negative_int, default=10, metavar="N",
                       help="redirects followed per URL (default: 10)")
    parser.add_argument("--client", default="requests", metavar="NAME",
                        help="HTTP transport: requests (default), or curl: libcurl through pycurl, much less "
                             "CPU per request; needs pip install 'fetcher[curl]'; not with --backend gevent")


def _rule_options(args: argparse.Namespace) -> dict[str, object]:
    """The Options fields of the fetching-rule flags, as parsed."""
    return {
        "timeout": args.timeout, "retries": args.retries, "backoff": args.backoff,
        "backoff_cap": args.backoff_cap, "max_retry_after": args.max_retry_after,
        "max_time": args.max_time, "min_speed": args.min_speed, "min_speed_time": args.min_speed_time,
        "per_host": args.per_host, "delay": args.delay, "user_agent": args.user_agent,
        "headers": args.header, "cookies": args.cookies, "insecure": args.insecure,
        "max_size": args.max_size, "min_size": args.min_size, "accept": args.accept,
        "max_redirects": args.max_redirects, "client": args.client,
    }


def _add_input_and_naming_arguments(parser: argparse.ArgumentParser) -> None:
    """--input-format, --naming, --on-exists (checked in Options.create)."""
    group = parser.add_argument_group("input and naming")
    group.add_argument("--input-format", default="auto", metavar="FORMAT",
                       help="auto, txt, csv, tsv or jsonl (default: auto, from the extension: "
                            ".txt .csv .tsv .jsonl .ndjson, each optionally .gz; stdin is txt)")
    group.add_argument("--naming", default="url", metavar="SCHEME",
                       help="url (HOST/STEM-HASH.EXT, default), hash (SHA1.EXT), content-disposition "
                            "(the server's name, made safe, plus the hash), or a template with "
                            "{host} {path} {name} {index} {sha1} {hash} {ext} that contains "
                            "{hash} or {sha1}, e.g. '{host}/{path}-{hash}.{ext}'")
    group.add_argument("--on-exists", default="skip", metavar="ACTION",
                       help="when a file is already under its name: skip (default; no request "
                            "when the name is known beforehand), overwrite, or rename (NAME (1).EXT)")


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


SUBCOMMANDS = ("status", "serve", "work")


def _main(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        if argv[0] == "status":
            return _status(argv[1:])
        from fetcher import cli_distributed

        return cli_distributed.serve_main(argv[1:]) if argv[0] == "serve" else cli_distributed.work_main(argv[1:])
    args = build_parser().parse_args(argv)
    _prepare_backend(args.backend)
    from fetcher.options import Options

    options = Options.create(backend=args.backend, pool=args.pool, processes=args.processes, out=args.out,
                             manifest=args.manifest, input_format=args.input_format, naming=args.naming,
                             on_exists=args.on_exists, **_rule_options(args))
    from fetcher.backends import get_backend

    get_backend(options.backend)  # an unknown name is a usage error before anything is written
    if options.insecure:
        print("fetcher: warning: --insecure: TLS certificates are NOT verified; anyone between you and "
              "the server can change what you download", file=sys.stderr)
    return _run(args, options)


def _prepare_backend(name: str) -> None:
    """Process-wide setup first, before anything imports requests (gevent monkey-patches here)."""
    from fetcher.backends import prepare_process

    prepare_process(name)


def _run(args: argparse.Namespace, options: Options) -> int:
    from fetcher import inputs, sources
    from fetcher.job import run_job
    from fetcher.progress import Progress

    rows = inputs.read_rows(args.input, options.input_format)
    first = next(rows, None)  # opens the file now: a missing file or 'url' column is a usage error
    total = _count_lines(args.input)
    show_bar = not args.quiet and sys.stderr.isatty()
    items = sources.iter_rows(_chain(first, rows), naming=options.naming, dedupe=False)  # the journal dedupes
    summary = run_job(items, options, Progress(total, enabled=show_bar), verbose=args.verbose,
                      quiet=args.quiet, retry_failed=args.retry_failed)
    if not args.quiet:
        print(summary.describe(options.backend, options.pool))
    return summary.exit_code


def _chain(first: _T | None, rest: Iterator[_T]) -> Iterator[_T]:
    if first is not None:
        yield first
        yield from rest


def _count_lines(path: str) -> int | None:
    """An upper bound on the URL count for the bar; None for stdin or a slow source."""
    if path == "-" or not os.path.isfile(path):
        return None
    count = 0
    with open(path, "rb") as handle:
        if handle.read(2) == b"\x1f\x8b":  # gzip: counting would mean decompressing it all
            return None
        handle.seek(0)
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count or None


def _status(argv: list[str]) -> int:
    """``fetcher status -o DIR``: what the journal of a folder knows, without downloading;
    ``fetcher status HOST:PORT``: what a running ``fetcher serve`` knows."""
    import time

    from fetcher.journal import Journal, journal_path

    parser = _Parser(prog="fetcher status", description="Show the state of an output folder's journal, "
                                                        "or of a running `fetcher serve`.")
    parser.add_argument("server", nargs="?", metavar="HOST:PORT", help="a running server to ask instead")
    parser.add_argument("-o", "--out", metavar="DIR", help="output folder (default: ./downloads)")
    parser.add_argument("--authkey-file", metavar="PATH", help="with HOST:PORT: the server's key "
                                                               "(default: $FETCHER_AUTHKEY)")
    args = parser.parse_args(argv)
    if args.server is not None:
        if args.out is not None:
            raise ConfigError("give either HOST:PORT or -o DIR, not both")
        from fetcher.cli_distributed import remote_status

        return remote_status(args.server, args.authkey_file)
    args.out = args.out or "downloads"
    journal = Journal(args.out, readonly=True)
    try:
        counts = journal.counts()
        total = sum(counts.values())
        print(f"{os.path.abspath(args.out)}: {total} URLs: " + ", ".join(
            f"{counts.get(state, 0)} {state}" for state in ("ok", "failed", "pending")))
        runs = journal.runs()
        if runs:
            number, started, finished = runs[-1]
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            print(f"runs: {len(runs)}; the last (#{number}) started {when} and "
                  + ("finished." if finished else "did not finish (interrupted, or still running)."))
        errors = journal.top_errors()
        if errors:
            print("failures by kind: " + ", ".join(f"{kind} {n}" for kind, n in errors))
            for url, kind, message in journal.failed_samples():
                print(f"  {kind}: {url}: {message}")
        print(f"journal: {journal_path(args.out)}")
    finally:
        journal.close()
    return EXIT_OK
