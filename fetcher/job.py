"""One run over one output folder: lock, journal, resume, engine, collector.

The CLI and the Python API both start runs through ``run_job``, so a rerun
behaves the same from either: what is done is skipped, what was interrupted
resumes, and the manifest has one record per unique URL of the run.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fetcher import engine, partial
from fetcher.collector import Collector, Summary
from fetcher.errors import ConfigError
from fetcher.journal import JOURNAL_DIR, Journal
from fetcher.resume import admit_all

if TYPE_CHECKING:
    from fetcher.backends.base import BackendFactory, SessionFactory
    from fetcher.models import Result, Task
    from fetcher.options import Options
    from fetcher.progress import Progress


def run_job(items: Iterator[Task | Result], options: Options, progress: Progress, *,
            verbose: bool = False, quiet: bool = False, retry_failed: bool = True,
            on_result: Callable[[Result], None] | None = None,
            session_factory: SessionFactory | None = None,
            counts: dict[str, int] | None = None, backend_factory: BackendFactory | None = None,
            local_files: bool = True) -> Summary:
    """Fetch ``items`` (unique or not) into ``options.out``, resuming any earlier run there.

    ``backend_factory`` replaces ``options.backend``; with ``local_files=False`` (the
    files live on remote workers) what the journal calls done is not checked on disk.

    Returns the Summary; Ctrl-C ends the run early with ``summary.interrupted``.

    Raises:
        ConfigError: another run holds the output folder, or its journal is unusable.
    """
    counts = {} if counts is None else counts
    with _exclusive(options.out):
        journal = Journal(options.out)
        try:
            journal.start_run()
            earlier_interrupted = journal.interrupted_before()
            collector = Collector(options.manifest_path, progress, verbose=verbose, quiet=quiet,
                                  on_result=on_result, journal=journal)
            interrupted = False
            try:
                engine.run(admit_all(items, journal, options.out, retry_failed, counts, local_files), options,
                           collector, session_factory, backend_factory)
            except KeyboardInterrupt:
                interrupted = True
            summary = collector.close(interrupted=interrupted)
            summary.duplicates += counts.get("duplicates", 0)
            if not interrupted:
                journal.finish_run()
                if earlier_interrupted and local_files:
                    partial.sweep(options.out)  # leftovers of runs that never finished
        finally:
            journal.close()
    return summary


@contextmanager
def _exclusive(out: str) -> Iterator[None]:
    """Hold the output folder's lock: two runs writing one folder would corrupt each other."""
    folder = os.path.join(out, JOURNAL_DIR)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "lock"), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"{out!r} is in use by another fetcher run ({holder}); wait for it or use "
                              "another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
