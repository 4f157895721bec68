"""A running run's live counts, for ``fetcher status -o DIR`` while it runs.

The journal knows every URL once it is final, but not that a run is still going, nor what
it has done so far. So the coordinating process keeps ``OUT/.fetcher/live.json`` (pid,
start, counts of this run), rewritten atomically at most every ``EVERY_S`` seconds and
removed when the run ends; the folder's lock (job.py) says whether its writer still runs,
so a file left by a killed run is never taken for a live one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

LIVE_NAME = "live.json"
LOCK_NAME = "lock"
EVERY_S = 0.5


@dataclass
class LiveCounts:
    """What a run has done so far."""

    pid: int
    started: float
    input_lines: int | None
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    bytes: int = 0
    updated: float = 0.0

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped


class LiveFile:
    """Writes a run's LiveCounts to ``folder/live.json``, throttled; removes it at ``close``."""

    def __init__(self, folder: str, input_lines: int | None) -> None:
        self.path = os.path.join(folder, LIVE_NAME)
        self.counts = LiveCounts(os.getpid(), time.time(), input_lines)
        self._written = 0.0
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        """Write the counts if ``EVERY_S`` has passed (or ``force``). Never fails the run: it is a hint."""
        now = time.monotonic()
        if not force and now - self._written < EVERY_S:
            return
        self._written = now
        self.counts.updated = time.time()
        part = self.path + ".part"
        try:
            with open(part, "w", encoding="utf-8") as handle:
                json.dump(asdict(self.counts), handle)
            os.replace(part, self.path)
        except OSError:
            pass  # a full disk is the journal's to report; the live view only goes stale

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.remove(self.path)


def running_pid(folder: str) -> int | None:
    """The pid of the run holding ``folder``'s lock, or None when no run holds it."""
    try:
        handle = open(os.path.join(folder, LOCK_NAME), encoding="utf-8")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            words = handle.read().split()
            return int(words[1]) if len(words) == 2 and words[0] == "pid" and words[1].isdigit() else 0
        fcntl.flock(handle, fcntl.LOCK_UN)  # free: no run; let one start
        return None


def read_live(folder: str) -> LiveCounts | None:
    """The live counts of the running run, if it wrote any."""
    try:
        with open(os.path.join(folder, LIVE_NAME), encoding="utf-8") as handle:
            data: dict[str, Any] = json.load(handle)
        return LiveCounts(**data)
    except (OSError, ValueError, TypeError):
        return None
