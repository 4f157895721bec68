"""``fetcher status``: what an output folder's journal, or a running ``fetcher serve``, knows."""

from __future__ import annotations

import os
import time

from typing import TYPE_CHECKING

from fetcher.cli.common import Parser
from fetcher.errors import ConfigError, ExitStatus

if TYPE_CHECKING:
    from fetcher.run.journal import Journal


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
    """Print what the journal of ``out`` knows: counts, the last run (live, while it runs), failures by kind."""
    from fetcher.run.journal import JOURNAL_DIR, Journal, journal_path
    from fetcher.run.live import running_pid
    from fetcher.run.shard_index import homes_summary, shard_summary

    pid = running_pid(os.path.join(out, JOURNAL_DIR))  # before the journal is opened: no lock of ours
    journal = Journal(out, readonly=True)
    try:
        counts = journal.counts()
        total = sum(counts.values())
        print(f"{os.path.abspath(out)}: {total} URL{'' if total == 1 else 's'}: " + ", ".join(
            f"{counts.get(state, 0)} {state}" for state in ("ok", "failed", "pending")))
        for shards in (shard_summary(out), homes_summary(out)):
            if shards is not None:
                print(shards)
        runs = journal.runs()
        if runs:
            _describe_last_run(journal, runs, pid, os.path.join(out, JOURNAL_DIR))
        errors = journal.top_errors()
        if errors:
            print("failures by kind: " + ", ".join(f"{kind} {n}" for kind, n in errors))
            for url, kind, message in journal.failed_samples():
                print(f"  {kind}: {url}: {message}")
        print(f"journal: {journal_path(out)}")
    finally:
        journal.close()


def _describe_last_run(journal: Journal, runs: list[tuple[int, float, float | None]], pid: int | None,
                       folder: str) -> None:
    from fetcher.run.live import read_live
    from fetcher.run.progress import human_bytes

    number, started, finished = runs[-1]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    if pid is not None and not finished:
        print(f"runs: {len(runs)}; the last (#{number}) started {when} and is running ({_pid(pid)}).")
        live = read_live(folder)
        if live is not None:
            seconds = max(time.time() - live.started, 1e-9)
            of_lines = f" of about {live.input_lines:,} input lines" if live.input_lines else ""
            print(f"so far: {live.done:,} URLs done{of_lines} ({live.ok:,} ok, {live.failed:,} failed, "
                  f"{live.skipped:,} skipped), {human_bytes(live.bytes)} in {seconds:.0f} s "
                  f"({live.done / seconds:.1f} files/s); counted {time.time() - live.updated:.1f} s ago")
        return
    print(f"runs: {len(runs)}; the last (#{number}) started {when} and "
          + ("finished." if finished else "did not finish (interrupted or killed)."))
    lines, seen = journal.last_run_input()
    if not finished and lines and seen < lines:
        # The journal learns of a URL only when the input is read that far.
        print(f"its input has about {lines} lines; it had read {seen} URLs when it stopped: "
              "the rest are not counted above (run the same command again to fetch them)")


def _pid(pid: int) -> str:
    return f"pid {pid}" if pid else "its pid unknown"
