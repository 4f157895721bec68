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

from fetcher.cli.common import (Parser, add_fetching_rules,
                                add_input_and_naming_arguments, add_run_reporting, chain, count_lines,
                                positive_int, prepare_backend, rule_options)
from fetcher.cli.datasets import add_dataset_arguments, dataset_options
from fetcher.errors import ConfigError, ExitStatus, StorageError

if TYPE_CHECKING:
    from fetcher.options import Options


def build_parser() -> argparse.ArgumentParser:
    from fetcher import __version__
    from fetcher.backends import BACKENDS

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
    parser.add_argument("--backend", default="auto", metavar="NAME",
                        help=f"how downloads run concurrently: {', '.join(BACKENDS)}, or auto (default): the "
                             "fastest this machine has")
    parser.add_argument("--pool", type=positive_int, default=8, metavar="N",
                        help="number of concurrent downloads (default: 8)")
    parser.add_argument("--processes", type=positive_int, default=0, metavar="N",
                        help="--backend process: worker processes the pool is spread over "
                             "(default: one per CPU, at most the pool)")
    parser.add_argument("-o", "--out", default="downloads", metavar="DIR",
                        help="output folder (default: ./downloads)")
    parser.add_argument("--manifest", metavar="PATH",
                        help="where to write the JSONL manifest (default: OUT/manifest.jsonl)")
    add_fetching_rules(parser)
    # A local run picks the fastest pair this machine has unless told (benchmarks/run.py and wan.py:
    # multi + curl beat thread + requests on every dataset); serve and work keep requests.
    parser.set_defaults(client="auto")
    add_run_reporting(parser, "rerun")
    parser.add_argument("--version", action="version", version=f"fetcher {__version__}")
    add_input_and_naming_arguments(parser)
    add_dataset_arguments(parser)
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
    from fetcher.options import Options

    options = Options.create(backend=args.backend, pool=args.pool, processes=args.processes, out=args.out,
                             manifest=args.manifest, input_format=args.input_format, naming=args.naming,
                             on_exists=args.on_exists, **rule_options(args), **dataset_options(args))
    from fetcher.backends import backend_class
    from fetcher.run.outdir import check_output

    # An unknown backend or pair, or one that cannot run here: a usage error, before any write.
    backend_class(options.backend, options.client).check(options)
    check_output(options.out, options.manifest_path)  # -o a file, a read-only mount: exit 2 now, in one line
    if options.insecure:
        print("fetcher: warning: --insecure: TLS certificates are NOT verified; anyone between you and "
              "the server can change what you download", file=sys.stderr)
    return _run(args, options)


def _run(args: argparse.Namespace, options: Options) -> int:
    from fetcher.sources import readers as inputs
    from fetcher.sources import tasks as sources
    from fetcher.run.job import run_job
    from fetcher.run.progress import Progress

    rows = inputs.read_rows(args.input, options.input_format, options.url_column)
    first = next(rows, None)  # opens the file now: a missing file or 'url' column is a usage error
    total = count_lines(args.input, inputs.detect_format(args.input, options.input_format))
    show_bar = not args.quiet and sys.stderr.isatty()
    items = sources.iter_rows(chain(first, rows), naming=options.naming, dedupe=False)  # the journal dedupes
    if options.auto and args.verbose:
        print(f"fetcher: {options.auto}", file=sys.stderr)
    summary = run_job(items, options, Progress(total, enabled=show_bar), verbose=args.verbose,
                      quiet=args.quiet, retry_failed=args.retry_failed, input_lines=total)
    if not args.quiet:
        label = f"{options.backend} (+ {options.client}, chosen by auto)" if options.auto else options.backend
        print(summary.describe(label, options.pool))
    return summary.exit_code
