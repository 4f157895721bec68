"""One sink for final results, whatever the backend: manifest, progress, summary.

The collector lives in the coordinating process only. The manifest is streamed
to ``manifest.jsonl.part`` as results arrive and renamed into place when the
run ends (also on Ctrl-C, with what finished), so a reader never sees half of
it under its final name.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from fetcher.models import Result, Status
from fetcher.naming import PART_SUFFIX
from fetcher.progress import Progress, human_bytes

if TYPE_CHECKING:
    from fetcher.journal import Journal

# One encoder for every line: json.dumps(..., ensure_ascii=False) builds a new one per call.
_MANIFEST_ENCODER = json.JSONEncoder(ensure_ascii=False)


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

    @property
    def total(self) -> int:
        return self.ok + self.failed + self.skipped

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def describe(self, backend: str, pool: int) -> str:
        """The one-paragraph summary printed at the end of a CLI run."""
        seconds = max(self.elapsed_s, 1e-9)
        head = "Interrupted after" if self.interrupted else "Finished"
        text = (f"{head} {self.total} URLs in {self.elapsed_s:.1f} s with the {backend} backend "
                f"(pool {pool}): {self.ok} ok, {self.failed} failed, {self.skipped} skipped; "
                f"{human_bytes(self.bytes)} at {self.total / seconds:.1f} files/s "
                f"({human_bytes(self.bytes / seconds)}/s).")
        if self.duplicates:
            text += f" {self.duplicates} duplicate lines were fetched once."
        if self.error_kinds:
            kinds = ", ".join(f"{kind} {count}" for kind, count in self.error_kinds.most_common())
            text += f" Failures by kind: {kinds}."
        if self.manifest:
            text += f" Manifest: {self.manifest}"
        if self.interrupted:
            text += "\nRun the same command again to finish: what is done is kept, interrupted downloads resume."
        return text


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
    """

    def __init__(self, manifest_path: str | None, progress: Progress, verbose: bool = False,
                 quiet: bool = False, on_result: Callable[[Result], None] | None = None,
                 journal: Journal | None = None, durable: bool = False) -> None:
        self.summary = Summary(manifest=manifest_path)
        self._manifest_path = manifest_path
        self._progress = progress
        self._verbose = verbose
        self._quiet = quiet
        self._on_result = on_result
        self._journal = journal
        self._durable = durable
        self._started = time.monotonic()
        self._closed = False
        self._manifest: IO[str] | None = None
        if manifest_path is not None:
            os.makedirs(os.path.dirname(manifest_path) or ".", exist_ok=True)
            self._manifest = open(manifest_path + PART_SUFFIX, "w", encoding="utf-8")

    def record(self, result: Result) -> None:
        """Account for one final Result: manifest line, counters, progress, notes."""
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
        assert not self._closed, "record() after close()"
        if self._journal is not None:
            self._journal.record(result)
        if self._manifest is not None:
            self._manifest.write(_MANIFEST_ENCODER.encode(result.to_record()) + "\n")
        self._progress.update(result.bytes, failed=result.status is Status.FAILED)
        self._note(result)
        if self._on_result is not None:
            self._on_result(result)

    def _note(self, result: Result) -> None:
        if self._quiet:
            return
        if result.error is not None:
            self._progress.note(f"failed {result.url}: {result.error.kind}: {result.error.message}")
        elif self._verbose:
            self._progress.note(f"{result.status.value} {result.url} -> {result.path} ({human_bytes(result.bytes)})")

    def close(self, interrupted: bool = False) -> Summary:
        """Finish the manifest and the bar; return the run's Summary."""
        if self._closed:
            return self.summary
        self._closed = True
        if self._manifest is not None and self._manifest_path is not None:
            if self._durable:  # data before name, name before the journal's last commit
                self._manifest.flush()
                os.fsync(self._manifest.fileno())
            self._manifest.close()
            self._manifest = None
            os.replace(self._manifest_path + PART_SUFFIX, self._manifest_path)
            if self._durable:
                _fsync_folder(os.path.dirname(self._manifest_path))
        self._progress.close()
        self.summary.elapsed_s = time.monotonic() - self._started
        self.summary.interrupted = interrupted
        return self.summary


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
