"""One sink for final results, whatever the backend: manifest, progress, summary.

The collector lives in the coordinating process only. The manifest is streamed
to ``manifest.jsonl.part`` as results arrive and renamed into place when the
run ends (also on Ctrl-C, or when the disk fills up, with what finished), so a
reader never sees half of it under its final name (manifest.py).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fetcher.errors import ExitStatus
from fetcher.models import Result, Status
from fetcher.redact import mask
from fetcher.run.manifest import ManifestWriter
from fetcher.run.progress import Progress, human_bytes

if TYPE_CHECKING:
    from fetcher.run.journal import Journal
    from fetcher.run.live import LiveFile


@dataclass
class Summary:
    """Counts of a finished (or interrupted) run; ``exit_code`` follows from them."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    bytes: int = 0
    duplicates: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    error_kinds: Counter[str] = field(default_factory=Counter)
    manifest: str | None = None
    stopped: str | None = None  # why the run stopped before the end (a full or read-only disk)
    manifest_problem: str | None = None  # why the manifest is not complete under its name
    manifests_kept: list[str] = field(default_factory=list)  # earlier runs' manifests, renamed aside

    @property
    def total(self) -> int:
        return self.ok + self.failed + self.skipped

    @property
    def exit_code(self) -> ExitStatus:
        if self.stopped is not None:
            return ExitStatus.STORAGE
        if self.interrupted:
            return ExitStatus.INTERRUPTED
        return ExitStatus.FAILED if self.failed else ExitStatus.OK

    def describe(self, backend: str, pool: int | str) -> str:
        """The one-paragraph summary printed at the end of a CLI run."""
        seconds = max(self.elapsed_s, 1e-9)
        head = ("Stopped after" if self.stopped is not None else
                "Interrupted after" if self.interrupted else "Finished")
        text = (f"{head} {self.total} URL{'' if self.total == 1 else 's'} in {self.elapsed_s:.1f} s with the {backend} backend "
                f"(pool {pool}): {self.ok} ok, {self.failed} failed, {self.skipped} skipped; "
                f"{human_bytes(self.bytes)} at {self.total / seconds:.1f} files/s "
                f"({human_bytes(self.bytes / seconds)}/s).")
        if self.duplicates:
            text += (" 1 duplicate line was fetched once." if self.duplicates == 1 else
                     f" {self.duplicates} duplicate lines were fetched once.")
        if self.error_kinds:
            kinds = ", ".join(f"{kind} {count}" for kind, count in self.error_kinds.most_common())
            text += f" Failures by kind: {kinds}."
        if self.manifest and self.manifest_problem is None:
            text += f" Manifest: {self.manifest}"
            if self.manifests_kept:
                names = ", ".join(os.path.basename(kept) for kept in self.manifests_kept)
                text += f" (the earlier run's kept as {names})"
        if self.stopped is not None:
            text += f"\nStopped: {self.stopped}."
        if self.manifest_problem is not None:
            text += f"\nManifest: {self.manifest_problem}."
        if self.stopped is not None:
            text += ("\nWhat finished is kept in the journal: make room (or make the folder writable) and "
                     "run the same command again to finish.")
        elif self.interrupted:
            text += "\nRun the same command again to finish: what is done is kept, interrupted downloads resume."
        return text


def result_line(result: Result) -> str:
    """A final Result as one line: what ``-v`` prints on standard output and ``--log`` keeps."""
    if result.error is not None:
        return mask(f"failed {result.url}: {result.error.kind}: {result.error.message}")
    return mask(f"{result.status.value} {result.url} -> {result.path} ({human_bytes(result.bytes)})")


class Collector:
    """Receives every final Result once and reports it.

    Args:
        manifest_path: where the JSONL manifest goes (its folder is created); None for none.
        progress: the progress bar (or a disabled one).
        verbose: note successes too, not only failures.
        quiet: note nothing per URL.
        on_result: called with each final Result (API hook).
        journal: where each final Result is also recorded, for reruns.
        durable: flush the manifest to the disk before its rename, and its folder
            after (``--durability`` batch or full; durability.py).
        live: where the run's counts so far are kept for ``fetcher status`` (live.py).
    """

    def __init__(self, manifest_path: str | None, progress: Progress, verbose: bool = False,
                 quiet: bool = False, on_result: Callable[[Result], None] | None = None,
                 journal: Journal | None = None, durable: bool = False, live: LiveFile | None = None) -> None:
        self.summary = Summary(manifest=manifest_path)
        self._progress = progress
        self._verbose = verbose
        self._quiet = quiet
        self._on_result = on_result
        self._journal = journal
        self._durable = durable
        self._live = live
        self._started = time.monotonic()
        self._closed = False
        self._manifest = ManifestWriter(manifest_path) if manifest_path is not None else None

    def record(self, result: Result) -> None:
        """Account for one final Result: manifest line, counters, progress, notes.

        Raises:
            StorageError: the journal or the manifest cannot be written (disk full, read-only).
        """
        assert not self._closed, "record() after close()"
        # Written down first: a result the disk refused is not counted as finished.
        if self._journal is not None:
            self._journal.record(result)
        if self._manifest is not None:
            self._manifest.write(result.to_record())
        summary = self.summary
        if result.status is Status.OK:
            summary.ok += 1
            summary.bytes += result.bytes
        elif result.status is Status.SKIPPED:
            summary.skipped += 1
        else:
            summary.failed += 1
            if result.error is not None:
                summary.error_kinds[result.error.kind] += 1
        self._progress.update(result.bytes, failed=result.status is Status.FAILED)
        self._update_live()
        self._note(result)
        if self._on_result is not None:
            self._on_result(result)

    def tick(self) -> None:
        """Bring the bar and the live counts for ``fetcher status`` up to date, and commit the
        journal's finished rows if they waited long enough (the engine calls it while it waits, at
        least every 0.25 s; the live counts are written at most every 0.5 s, commits as journal.py says).

        Raises:
            StorageError: the journal cannot be written (disk full, read-only).
        """
        self._progress.tick()
        self._update_live()
        if self._journal is not None:
            self._journal.commit_if_due()

    def _update_live(self) -> None:
        if self._live is not None:
            summary, counts = self.summary, self._live.counts
            counts.ok, counts.failed, counts.skipped = summary.ok, summary.failed, summary.skipped
            counts.bytes = summary.bytes
            self._live.write()

    def _note(self, result: Result) -> None:
        show = not self._quiet and (result.error is not None or self._verbose)
        if show or self._progress.logging:
            self._progress.report(result_line(result), show)

    def close(self, interrupted: bool = False, stopped: str | None = None) -> Summary:
        """Finish the manifest and the bar; return the run's Summary.

        ``stopped`` says why the run ended early, when a full or read-only disk ended it.
        """
        if self._closed:
            return self.summary
        self._closed = True
        if self._manifest is not None:
            self.summary.manifest_problem = self._manifest.close(durable=self._durable)
            self.summary.manifests_kept = self._manifest.kept
            self._manifest = None
        # An interrupted or stopped bar stays where it stopped; a finished one shows its true total.
        self._progress.close(finished=not interrupted and stopped is None)
        if self._live is not None:
            self._live.close()
        self.summary.elapsed_s = time.monotonic() - self._started
        self.summary.interrupted = interrupted
        self.summary.stopped = stopped
        return self.summary
