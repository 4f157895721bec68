"""One run over one output folder: lock, journal, resume, engine, collector.

The CLI and the Python API both run through ``Job``, so a rerun behaves the
same from either: what is done is skipped, what was interrupted resumes, and
the manifest has one record per unique URL of the run.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, closing, contextmanager
from typing import TYPE_CHECKING

from fetcher.download import durability, partial
from fetcher.errors import ConfigError, StorageError
from fetcher.run import engine
from fetcher.run.collector import Collector, Summary
from fetcher.run.journal import JOURNAL_DIR, Journal
from fetcher.run.live import LiveFile
from fetcher.run.outdir import check_output, make_folder
from fetcher.run.resume import admit_all
from fetcher.run.shards import open_shards, write_manifest_copy

if TYPE_CHECKING:
    from fetcher.backends.base import BackendFactory, SessionFactory
    from fetcher.models import Item, Result
    from fetcher.options import Options
    from fetcher.run.progress import Progress
    from fetcher.download.guards import CancelFlag


class Job:
    """A run's setup, shared by the CLI and the API.

    Args:
        options: the run's options.
        progress: the bar (or a disabled one).
        journal: keep the output folder's journal (resume, skip, status); off
            for in-memory fetching, where there is no folder.
        manifest: write ``options.output.manifest_path``.
        verbose, quiet, on_result: as for Collector.
        retry_failed: on a rerun, try again URLs that failed before.
        session_factory: builds each worker's requests.Session.
        backend_factory: replaces ``options.transport.backend`` (``fetcher serve`` passes its RemoteBackend).
        local_files: the files are in ``options.output.out`` here; False when they live on
            remote workers: what the journal calls done is then not checked on disk, and
            a worker's full disk fails its URL (to be retried elsewhere) instead of the run.
        input_lines: about how many lines the input has, if known (for ``fetcher status``).
    """

    def __init__(self, options: Options, progress: Progress, *, journal: bool = True, manifest: bool = True,
                 verbose: bool = False, quiet: bool = False, retry_failed: bool = True,
                 on_result: Callable[[Result], None] | None = None,
                 session_factory: SessionFactory | None = None, backend_factory: BackendFactory | None = None,
                 local_files: bool = True, input_lines: int | None = None) -> None:
        self.options = options
        self.input_lines = input_lines
        self.backend_factory = backend_factory
        self.local_files = local_files
        self.progress = progress
        self.use_journal = journal
        self.manifest = manifest
        self.verbose, self.quiet, self.retry_failed = verbose, quiet, retry_failed
        self.on_result = on_result
        self.session_factory = session_factory
        self.summary: Summary | None = None

    def results(self, items: Iterator[Item],
                wait_for_more: Callable[[float], bool] | None = None,
                cancel: CancelFlag | None = None, repeat: bool = False) -> Generator[Result, None, None]:
        """Fetch ``items`` and yield each final Result, after it is recorded.

        ``wait_for_more`` and ``cancel`` are passed to ``engine.results``;
        ``repeat`` to ``resume.admit_all``.

        ``self.summary`` is set when the generator ends, however it ends (an
        exception, or the consumer stopping early, counts as interrupted).

        Raises:
            ConfigError: another run holds the output folder, or the folder, its journal
                or the manifest cannot be written (before anything is fetched).
            StorageError: the disk filled up (or became read-only) during the run; the
                summary (``stopped``) says so, and what finished is kept.
        """
        # Over 40 lines: one ExitStack holds the lock, journal, collector and engine of the run, in order.
        counts: dict[str, int] = {"duplicates": 0}
        options = self.options
        if self.use_journal or self.manifest:
            check_output(options.output.out, options.output.manifest_path if self.manifest else None)
        with ExitStack() as stack:
            journal = None
            earlier_interrupted = False
            shards = None
            if self.use_journal:
                stack.enter_context(_exclusive(options.output.out))
                shards = open_shards(options)  # webdataset output, else None
                if shards is not None:
                    items = shards.admit(items)  # before the journal: URLs of finished shards are skipped
                journal = Journal(options.output.out)
                stack.callback(journal.close)
                recorded = durability.begin_run(options)  # what earlier runs left is on disk before this vouches
                try:
                    journal.start_run(self.input_lines, recorded, durability.boot_id())
                except StorageError as exc:
                    raise ConfigError(str(exc)) from None  # nothing fetched yet: a usage-time error
                earlier_interrupted = journal.interrupted_before()
                items = admit_all(items, journal, options.output.out, self.retry_failed, counts, repeat,
                                  local_files=self.local_files)
            live = LiveFile(os.path.join(options.output.out, JOURNAL_DIR), self.input_lines) if journal else None
            collector = Collector(options.output.manifest_path if self.manifest else None, self.progress,
                                  verbose=self.verbose, quiet=self.quiet, on_result=self.on_result, journal=journal,
                                  durable=options.output.durability != "none", live=live)
            completed, stopped = False, None
            try:
                finals = stack.enter_context(closing(engine.results(
                    items, options, self.session_factory, wait_for_more, cancel, self.backend_factory,
                    storage_stops=self.local_files, tick=collector.tick)))
                for result in finals:
                    if shards is not None:
                        result = shards.add(result)
                    collector.record(result)
                    yield result
                completed = True
            except StorageError as exc:
                stopped = str(exc)
                raise
            finally:
                if shards is not None:
                    shards.close(completed)
                self.summary = collector.close(interrupted=not completed, stopped=stopped)
                self.summary.duplicates += counts["duplicates"]
                if completed and self.manifest:
                    write_manifest_copy(options)
            if journal is not None:
                journal.finish_run()
                if earlier_interrupted and self.local_files:
                    partial.sweep(options.output.out)  # leftovers of runs that never finished


def run_job(items: Iterator[Item], options: Options, progress: Progress, *,
            verbose: bool = False, quiet: bool = False, retry_failed: bool = True,
            on_result: Callable[[Result], None] | None = None,
            session_factory: SessionFactory | None = None, backend_factory: BackendFactory | None = None,
            local_files: bool = True, input_lines: int | None = None) -> Summary:
    """Fetch ``items`` into ``options.output.out``, resuming any earlier run there; return the Summary.

    Ctrl-C ends the run early with ``summary.interrupted`` set, and a full or
    read-only disk with ``summary.stopped`` set, instead of raising.
    """
    job = Job(options, progress, verbose=verbose, quiet=quiet, retry_failed=retry_failed,
              on_result=on_result, session_factory=session_factory, backend_factory=backend_factory,
              local_files=local_files, input_lines=input_lines)
    try:
        for _ in job.results(items):
            pass
    except (KeyboardInterrupt, StorageError):
        if job.summary is None:  # before the run even started
            raise
    assert job.summary is not None
    return job.summary


@contextmanager
def _exclusive(out: str) -> Iterator[None]:
    """Hold the output folder's lock: two runs writing one folder would corrupt each other."""
    folder = os.path.join(out, JOURNAL_DIR)
    make_folder(folder, "the journal's folder")
    try:
        handle = open(os.path.join(folder, "lock"), "a+")
    except OSError as exc:
        raise ConfigError(f"cannot write in {folder!r}: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"{out!r} is in use by another fetcher run ({holder}); wait for it or use "
                              "another --out") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
        except OSError as exc:
            raise ConfigError(f"cannot write in {folder!r}: {exc.strerror or exc}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
