"""One run over one output folder, as a function: ``run(spec, items)`` yields each final Result.

The CLI, ``fetcher serve`` and the Python API all run through it, so a rerun behaves
the same from each: what is done is skipped, what was interrupted resumes, and the
manifest has one record per unique URL of the run.

A ``RunSpec`` says what a run is made of; ``plan`` builds the usual one. Its parts
are entered once, in one ExitStack, in this order (and left in the reverse one)::

    folder (lock, journal, resume)  ->  steps (shards, parquet manifest)  ->  collector  ->  engine

Items flow the other way in: the steps' ``admit`` first (finished shards' URLs are
skipped), then the journal's. A step that is not wanted is not in the spec: nothing
here branches on a flag.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, cast

from fetcher.download import durability, partial
from fetcher.errors import ConfigError, StorageError
from fetcher.run import engine
from fetcher.run.engine import Pause
from fetcher.run.collector import Collector, Summary
from fetcher.run.journal import JOURNAL_DIR, Journal
from fetcher.run.live import LiveFile
from fetcher.run.outdir import check_output, make_folder
from fetcher.run.resume import admit_all

if TYPE_CHECKING:
    from types import TracebackType

    from fetcher.backends.base import BackendFactory, SessionFactory
    from fetcher.download.guards import CancelFlag
    from fetcher.models import Item, Result
    from fetcher.options import Options
    from fetcher.run.progress import Progress


class Step(Protocol):
    """An optional part of a run, open from before the first item until after the manifest is written."""

    def admit(self, items: Iterator[Item]) -> Iterator[Item]:
        """The items the run should fetch (a step may answer some itself, as Results)."""

    def add(self, result: Result) -> Result | None:
        """A final Result on its way to the collector (a step may change what it records, or hold it:
        None, to hand it back later through ``rejoin``)."""

    def rejoin(self, items: Iterator[Item]) -> Iterator[Item]:
        """The items after the journal's admit: a step may add tasks to do again, or the Results it
        held (they go straight to ``add`` and the collector, past the journal's duplicate check)."""

    def close(self, completed: bool) -> None:
        """The run is over (``completed``: every item was fetched), after the manifest was written."""


class StepOpener(Protocol):
    """What a spec carries: a step opened once the output folder is locked."""

    def open(self) -> Step: ...


@dataclass(frozen=True)
class Report:
    """How a run is seen: the bar, what is printed, and who is told of each Result and of the end."""

    progress: Progress
    verbose: bool = False
    quiet: bool = False
    on_result: Callable[[Result], None] | None = None
    on_summary: Callable[[Summary], None] | None = None  # once, however the run ends


@dataclass(frozen=True)
class Folder:
    """Keep the output folder's journal: lock the folder, resume and skip what earlier runs did.

    Attributes:
        retry_failed: on a rerun, try again URLs that failed before.
        input_lines: about how many lines the input has, if known (for ``fetcher status``).
        repeat: a URL may come again once its result is back (``Fetcher``; see ``resume.admit_all``).
    """

    retry_failed: bool = True
    input_lines: int | None = None
    repeat: bool = False


@dataclass(frozen=True)
class Workers:
    """Who downloads, and where their files land.

    Attributes:
        session_factory: builds each worker's requests.Session.
        backend_factory: replaces ``options.transport.backend`` (``fetcher serve`` passes its RemoteBackend).
        files_here: the files are in ``options.output.out`` here; False when they live on remote
            workers: what the journal calls done is then not checked on disk, and a worker's full
            disk fails its URL (to be retried elsewhere) instead of the run.
    """

    session_factory: SessionFactory | None = None
    backend_factory: BackendFactory | None = None
    files_here: bool = True


@dataclass(frozen=True)
class RunSpec:
    """What a run is made of (``plan`` builds the usual one).

    Attributes:
        options: the run's options.
        report: the bar, the printing, the callbacks.
        folder: the journal's settings; None: no journal (in-memory fetching, where there is no folder).
        manifest: where the JSONL manifest goes; None: none.
        steps: optional steps (webdataset shards, the parquet manifest), in the order they see items.
        workers: who downloads, and where the files land.
    """

    options: Options
    report: Report
    folder: Folder | None = field(default_factory=Folder)
    manifest: str | None = None
    steps: tuple[StepOpener, ...] = ()
    workers: Workers = field(default_factory=Workers)


def plan(options: Options, report: Report, folder: Folder | None = Folder(), manifest: bool = True,
         workers: Workers = Workers()) -> RunSpec:
    """The usual RunSpec: the steps ``options`` ask for (shards need the journal's folder lock)."""
    # Imported only when asked for: run/shards.py (with tarfile and the shard index) was a tenth of
    # a plain run's start-up (issue 29).
    path = options.output.manifest_path if manifest else None
    steps: list[StepOpener] = []
    if folder is not None and options.dataset.output_format == "webdataset":
        from fetcher.run.shards import Shards

        options = replace(options, shards_here=True)  # re-encoded samples come back in Results
        steps.append(Shards(options))
    if path is not None and options.output.manifest_format == "parquet":
        from fetcher.run.shards import ParquetManifest

        steps.append(ParquetManifest(path))
    return RunSpec(options, report, folder, path, tuple(steps), workers)


def run(spec: RunSpec, items: Iterator[Item], wait_for_more: Callable[[float], bool] | None = None,
        cancel: CancelFlag | None = None) -> Generator[Result, None, None]:
    """Fetch ``items`` and yield each final Result, after it is recorded.

    ``wait_for_more`` and ``cancel`` are passed to ``engine.results``. ``spec.report.on_summary``
    is called with the Summary when the generator ends, however it ends (an exception, or the
    consumer stopping early, counts as interrupted).

    Raises:
        ConfigError: another run holds the output folder, or the folder, its journal
            or the manifest cannot be written (before anything is fetched).
        StorageError: the disk filled up (or became read-only) during the run; the
            summary (``stopped``) says so, and what finished is kept.
    """
    # Without a local_backend the run yields no Pause: the cast costs nothing per Result.
    return cast("Generator[Result, None, None]", _run(spec, items, wait_for_more, cancel, None))


def run_pausing(spec: RunSpec, items: Iterator[Item], local_backend: BackendFactory,
                wait_for_more: Callable[[float], bool] | None = None,
                cancel: CancelFlag | None = None) -> Generator[Result | Pause, None, None]:
    """``run``, for a driver on an event loop (run/aio_driver.py): the run never blocks; it yields an
    ``engine.Pause`` where it would wait (see ``engine.results``).

    Two steps work the disk and never touch the backend, so a driver on a loop runs them on a
    thread: the first (the setup: the folder's lock, the journal, a sync of the folder), which
    ends with ``Pause(0)``, and the one after ``Pause(0, disk=True)`` (the teardown: the manifest
    closed, the last commit). ``local_backend`` makes the run's backend, on the driver's thread.
    """
    return _run(spec, items, wait_for_more, cancel, local_backend)


def _run(spec: RunSpec, items: Iterator[Item], wait_for_more: Callable[[float], bool] | None,
         cancel: CancelFlag | None, local_backend: BackendFactory | None) -> Generator[Result | Pause, None, None]:
    """The run behind ``run`` and ``run_pausing``."""
    options = spec.options
    if spec.folder is not None or spec.manifest is not None:
        check_output(options.output.out, spec.manifest)
    with ExitStack() as stack:
        journal: _Journaled | None = None
        if spec.folder is not None:
            journal = stack.enter_context(_journaled(options, spec.folder, spec.workers.files_here))
        opened = [_entered(stack, opener.open()) for opener in spec.steps]
        for step in opened:
            items = step.admit(items)  # before the journal: URLs of finished shards are skipped
        if journal is not None:
            items = journal.admit(items)
        for step in opened:
            rejoin = getattr(step, "rejoin", None)  # optional: only a step that holds Results needs it
            items = rejoin(items) if rejoin is not None else items
        live = None
        if journal is not None and spec.folder is not None:  # what `fetcher status` reads while it runs
            live = LiveFile(os.path.join(options.output.out, JOURNAL_DIR), spec.folder.input_lines)
        collector = Collector(spec.manifest, spec.report.progress, verbose=spec.report.verbose,
                              quiet=spec.report.quiet, on_result=spec.report.on_result,
                              journal=journal.journal if journal is not None else None,
                              durable=options.output.durability != "none", live=live)
        if local_backend is not None:
            yield Pause(0.0)  # the setup above is done: back to the driver's own thread
        backend = spec.workers.backend_factory if local_backend is None else engine.LoopBackend(local_backend)
        finals = stack.enter_context(closing(engine.results(
            items, options, spec.workers.session_factory, wait_for_more, cancel, backend,
            storage_stops=spec.workers.files_here, tick=collector.tick)))
        yield from _collect(finals, opened, collector, spec.report,
                            journal.counts if journal is not None else {"duplicates": 0}, local_backend is not None)


def run_to_end(spec: RunSpec, items: Iterator[Item],
               wait_for_more: Callable[[float], bool] | None = None) -> Summary:
    """Fetch ``items`` into ``options.output.out``, resuming any earlier run there; return the Summary.

    Ctrl-C ends the run early with ``summary.interrupted`` set, and a full or
    read-only disk with ``summary.stopped`` set, instead of raising. ``wait_for_more``: as ``run``'s.
    """
    ended: list[Summary] = []
    report = spec.report

    def keep(summary: Summary) -> None:
        ended.append(summary)
        _tell(report, summary)

    spec = replace(spec, report=replace(report, on_summary=keep))
    try:
        for _ in run(spec, items, wait_for_more):
            pass
    except (KeyboardInterrupt, StorageError):
        if not ended:  # before the run even started
            raise
    return ended[0]


def _tell(report: Report, summary: Summary) -> None:
    if report.on_summary is not None:
        report.on_summary(summary)


def _collect(finals: Iterator[Result | Pause], steps: list[Step], collector: Collector, report: Report,
             counts: dict[str, int], pausing: bool = False) -> Generator[Result | Pause, None, None]:
    """Record each final Result (steps first, then the collector); close the collector however it ends.
    ``pausing``: pass the engine's Pauses on, and one with ``disk`` before the teardown."""
    completed, stopped = False, None
    try:
        for result in finals:
            if isinstance(result, Pause):
                yield result
                continue
            kept: Result | None = result
            for step in steps:
                kept = step.add(kept) if kept is not None else None
            if kept is None:
                continue  # held by a step: it comes back through the step's rejoin
            collector.record(kept)
            yield kept
        if pausing:
            yield Pause(0.0, disk=True)  # what follows closes the manifest, the journal and the lock
        completed = True
    except StorageError as exc:
        stopped = str(exc)
        raise
    finally:
        summary = collector.close(interrupted=not completed, stopped=stopped)
        summary.duplicates += counts["duplicates"]
        _tell(report, summary)


def _entered(stack: ExitStack, step: Step) -> Step:
    """``step``, closed when the stack unwinds: completed only if nothing went wrong."""
    def close(kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        step.close(completed=kind is None)

    stack.push(close)
    return step


@dataclass
class _Journaled:
    """The open journal of a locked folder, and how many duplicate items it dropped."""

    journal: Journal
    admit: Callable[[Iterator[Item]], Iterator[Item]]
    counts: dict[str, int]


@contextmanager
def _journaled(options: Options, folder: Folder, files_here: bool) -> Iterator[_Journaled]:
    """Lock the folder, open its journal and start this run in it; finish the run if it completed."""
    out = options.output.out
    with _exclusive(out), closing(Journal(out)) as journal:
        recorded = durability.begin_run(options)  # what earlier runs left is on disk before this vouches
        try:
            journal.start_run(folder.input_lines, recorded, durability.boot_id())
        except StorageError as exc:
            raise ConfigError(str(exc)) from None  # nothing fetched yet: a usage-time error
        earlier_interrupted = journal.interrupted_before()
        counts = {"duplicates": 0}

        def admit(items: Iterator[Item]) -> Iterator[Item]:
            return admit_all(items, journal, out, folder.retry_failed, counts, folder.repeat, local_files=files_here)

        yield _Journaled(journal, admit, counts)
        journal.finish_run()  # reached only when the run completed: an exception skips it
        if earlier_interrupted and files_here:
            partial.sweep(out)  # leftovers of runs that never finished


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
