"""The ``fetcher`` command: argparse → Options → engine → exit status.

Exit status: 0 every URL succeeded, 1 some failed, 2 usage or configuration
error, 130 interrupted. Nothing heavy is imported before the arguments are
parsed, so the gevent backend can monkey-patch before requests is loaded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fetcher.cli.common import Parser, add_run_reporting, open_log, prepare_backend
from fetcher.cli.flags import add_flags, flag_values
from fetcher.errors import ConfigError, ExitStatus, StorageError
from fetcher.options.table import DATASET, LOCAL, NAMING, RULES, RUN

if TYPE_CHECKING:
    from fetcher.options import Options


def build_parser() -> argparse.ArgumentParser:
    from fetcher import __version__

    parser = Parser(
        prog="fetcher",
        description="Download every URL of a list concurrently into a folder, with a manifest.",
        epilog="Exit status: 0 all succeeded, 1 some URLs failed, 2 usage error, 3 stopped: the output's "
               "disk is full or read-only, 130 interrupted. "
               "Also: 'fetcher status', and distributed mode: 'fetcher serve' and 'fetcher work' "
               "(each has --help).",
    )
    parser.add_argument("input", help="URL list: text (one URL per line); CSV, TSV or JSONL with a 'url' "
                                      "column, each optionally .gz; or parquet; '-' reads stdin")
    add_flags(parser, LOCAL, RUN)
    add_flags(parser, LOCAL, RULES)
    add_run_reporting(parser, "rerun")
    parser.add_argument("--version", action="version", version=f"fetcher {__version__}")
    add_flags(parser, LOCAL, NAMING)
    add_flags(parser, LOCAL, DATASET)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status instead of exiting (tests call this).

    Standard output and error are Consoles while it runs: a reader that goes
    away (``| head``) ends the printing, never the run (console.py).
    """
    from fetcher.cli.console import guarded_streams

    with guarded_streams():
        try:
            return _main(list(sys.argv[1:] if argv is None else argv))
        except ConfigError as exc:
            print(f"fetcher: error: {exc}", file=sys.stderr)
            return ExitStatus.USAGE
        except StorageError as exc:  # before the run's summary existed (it prints its own)
            print(f"fetcher: error: {exc}", file=sys.stderr)
            return ExitStatus.STORAGE
        except KeyboardInterrupt:
            print("fetcher: interrupted", file=sys.stderr)
            return ExitStatus.INTERRUPTED
        except SystemExit as exc:  # --help and --version
            return exc.code if isinstance(exc.code, int) else ExitStatus.OK


SUBCOMMANDS = ("status", "serve", "work")


def _main(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        if argv[0] == "status":
            from fetcher.cli.status import status_main

            return status_main(argv[1:])
        from fetcher.cli import distributed as cli_distributed

        return cli_distributed.serve_main(argv[1:]) if argv[0] == "serve" else cli_distributed.work_main(argv[1:])
    args = build_parser().parse_args(argv)
    prepare_backend(args.backend)
    from fetcher.options import Options, prepare_run

    options, auto = prepare_run(Options.create(**flag_values(args, LOCAL)))
    from fetcher.backends import backend_class
    from fetcher.run.outdir import check_output

    # An unknown backend or pair, or one that cannot run here: a usage error, before any write.
    backend_class(options.transport.backend, options.transport.client).check(options)
    check_output(options.output.out, options.output.manifest_path)  # -o a file, a read-only mount: exit 2 now
    if options.politeness.insecure:
        print("fetcher: warning: --insecure: TLS certificates are NOT verified; anyone between you and "
              "the server can change what you download", file=sys.stderr)
    return _run(args, options, auto)


def _run(args: argparse.Namespace, options: Options, auto: str) -> int:
    from fetcher.run.runner import Folder, Report, plan, run_to_end
    from fetcher.run.progress import Progress
    from fetcher.sources.opening import open_input

    opened = open_input(args.input, options)
    total, show_bar = opened.total, not args.quiet and sys.stderr.isatty()
    if auto and args.verbose:
        print(f"fetcher: {auto}", file=sys.stderr)
    log = open_log(args.log)
    try:
        progress = Progress(total, enabled=show_bar, log=log)
        report = Report(progress, verbose=args.verbose, quiet=args.quiet)
        summary = run_to_end(plan(options, report, Folder(args.retry_failed, input_lines=total)), opened.items)
        transport = options.transport
        label = f"{transport.backend} (+ {transport.client}, chosen by auto)" if auto else transport.backend
        described = summary.describe(label, options.transport.pool)
        progress.log(described)
    finally:
        if log is not None:
            log.close()
    if not args.quiet:
        print(described)
    return summary.exit_code
