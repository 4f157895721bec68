"""``fetcher status``: what an output folder's journal, or a running ``fetcher serve``, knows."""

from __future__ import annotations

import os
import time

from fetcher.cli.common import Parser
from fetcher.errors import ConfigError, ExitStatus


def status_main(argv: list[str]) -> int:
    """``fetcher status -o DIR``: what the journal of a folder knows, without downloading;
    ``fetcher status HOST:PORT``: what a running ``fetcher serve`` knows."""
    parser = Parser(prog="fetcher status", description="Show the state of an output folder's journal, "
                                                        "or of a running `fetcher serve`.")
    parser.add_argument("server", nargs="?", metavar="HOST:PORT|redis://...",
                        help="a running `fetcher serve` (or its Redis broker) to ask instead")
    parser.add_argument("-o", "--out", metavar="DIR", help="output folder (default: ./downloads)")
    from fetcher.cli.distributed import add_broker_credentials, remote_status

    add_broker_credentials(parser)
    args = parser.parse_args(argv)
    if args.server is not None:
        if args.out is not None:
            raise ConfigError("give either HOST:PORT or -o DIR, not both")
        return remote_status(args)
    _describe_journal(args.out or "downloads")
    return ExitStatus.OK


def _describe_journal(out: str) -> None:
    """Print what the journal of ``out`` knows: counts, the last run, failures by kind."""
    from fetcher.run.journal import Journal, journal_path

    journal = Journal(out, readonly=True)
    try:
        counts = journal.counts()
        total = sum(counts.values())
        print(f"{os.path.abspath(out)}: {total} URLs: " + ", ".join(
            f"{counts.get(state, 0)} {state}" for state in ("ok", "failed", "pending")))
        runs = journal.runs()
        if runs:
            number, started, finished = runs[-1]
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            print(f"runs: {len(runs)}; the last (#{number}) started {when} and "
                  + ("finished." if finished else "did not finish (interrupted, or still running)."))
            lines, seen = journal.last_run_input()
            if not finished and lines and seen < lines:
                # The journal learns of a URL only when the input is read that far.
                print(f"its input has about {lines} lines; it had read {seen} URLs when it stopped: "
                      "the rest are not counted above (run the same command again to fetch them)")
        errors = journal.top_errors()
        if errors:
            print("failures by kind: " + ", ".join(f"{kind} {n}" for kind, n in errors))
            for url, kind, message in journal.failed_samples():
                print(f"  {kind}: {url}: {message}")
        print(f"journal: {journal_path(out)}")
    finally:
        journal.close()
