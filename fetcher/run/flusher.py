"""The engine's Flusher: finished files are held until their batch is on the disk.

Between the scheduler and the collector (see download/durability.py for the why and the
levels): a Result that placed a file of this run is held; a flush, at most every
``FLUSH_EVERY_S`` and on a thread of its own, makes the held files durable in
order — data (one syncfs, or nothing under ``full``, whose workers fdatasync'd
each file), names (the staged renames), folders — and only then are the Results
handed on, to the journal among others. Results that placed nothing (failures,
skips) pass at once.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING

from fetcher.download import partial, placement
from fetcher.download.durability import BATCH, FLUSH_EVERY_N, FLUSH_EVERY_S, FULL, sync_file, sync_folders, syncfs
from fetcher.errors import STORAGE_ERRNOS
from fetcher.models import ErrorKind, FetchTask, Result, Status, failed
from fetcher.files.paths import PART_SUFFIX

if TYPE_CHECKING:
    from fetcher.options import Options

POLL_S = 0.01  # how often the engine looks for the batch a flush thread finished
# A flush when none began for this long runs on the caller's thread: results only trickle in,
# the coordinator is not busy, and the first file of a run is handed on at once.
TRICKLE_S = 1.0


class Flusher:
    """Holds the Results of files not yet durable; ``ready`` hands them on once they are.

    While files keep coming, a due batch is flushed on a thread of its own, so the
    coordinator (a multi loop, the thread that reads results) keeps going while
    syncfs waits for the disk; the first batch after a quiet spell (``TRICKLE_S``),
    the last one, and what is left after an interrupt are flushed on the caller's thread.

    Args:
        options: the run's options.
        active: whether files pass through it at all (no: remote workers' files, which are not here).
        inline: False for a caller on an event loop (aio.py): every batch is then flushed on a
            thread, and ``ready`` never waits for one unless asked to (``block``); the caller
            asks again after ``seconds_until_due`` while ``holding``.
    """

    def __init__(self, options: Options, active: bool = True, inline: bool = True) -> None:
        self.options = options
        self.active = active and options.output.durability in (BATCH, FULL) and not options.output.in_memory
        self._held: list[tuple[Result, FetchTask]] = []
        self._last = -TRICKLE_S  # when the last flush began: the first one runs at once, here
        self._inline = inline
        # Under gevent a "thread" is a greenlet: syncfs would block the hub all the same, so flush here.
        self._apart = _threads_are_real()
        self._flushing: threading.Thread | None = None  # the batch being flushed, if any
        self._flushed: queue.SimpleQueue[list[Result] | BaseException] = queue.SimpleQueue()

    def add(self, result: Result, task: FetchTask) -> Result | None:
        """``result`` itself when it waits for nothing, else None: it is held for the next flush."""
        if not self.active or not (result.staged or (result.status is Status.OK and result.path is not None)):
            return result
        self._held.append((result, task))
        return None

    @property
    def holding(self) -> bool:
        """Some Result waits for a flush (held, or its batch on the flush thread)."""
        return bool(self._held) or self._flushing is not None

    def seconds_until_due(self) -> float | None:
        """How long until ``ready`` has something to do; None when nothing is held."""
        if self._flushing is not None:
            return POLL_S
        if not self._held:
            return None
        return max(0.0, self._last + FLUSH_EVERY_S - time.monotonic())

    def ready(self, idle: bool = False, block: bool | None = None) -> list[Result]:
        """Results whose flush is over; starts the next flush when one is due.

        ``idle`` (nothing else is running, or the run is ending): wait for the batch
        on its thread, then flush the rest here; not ``inline``, start its flush on a
        thread instead, unless ``block`` (what is left after an interrupt). An interrupt
        in the middle (Ctrl-C) leaves what is not yet handed on held, each file's progress
        noted, so calling again finishes the batch.
        """
        block = self._inline if block is None else block
        done = self._collect(wait=idle and block)
        if not self._held or self._flushing is not None:
            return done
        now = time.monotonic()
        due = len(self._held) >= FLUSH_EVERY_N or now >= self._last + FLUSH_EVERY_S
        if not block and self._apart:  # an event loop's thread: it never waits for the disk
            if due or idle:
                self._start_apart(now)
            return done
        if idle or (due and (not self._apart or now >= self._last + TRICKLE_S)):
            self._last = now
            done += self._flush(self._held)
            self._held = []
        elif due:
            self._start_apart(now)
        return done

    def _start_apart(self, now: float) -> None:
        batch, self._held = self._held, []
        self._last = now
        self._flushing = threading.Thread(target=self._flush_apart, args=(batch,), name="fetcher-flush",
                                          daemon=True)
        self._flushing.start()

    def abandon(self) -> None:
        """The run stops early: staged bodies never get a name (a resumable one is kept).

        A batch already on its thread is left to finish: its files get their names, and
        the next run finds them (resume.py).
        """
        for result, task in self._held:
            if result.staged:
                part = _inside(self.options.output.out, task.name) + PART_SUFFIX
                if not partial.is_resumable(part):
                    partial.discard(part)
        self._held.clear()

    def _collect(self, wait: bool) -> list[Result]:
        """The batch the flush thread finished, if it did (with ``wait``, once it has)."""
        thread = self._flushing
        if thread is None:
            return []
        while wait and thread.is_alive():  # bounded by the flush's system calls
            thread.join(1.0)
        if thread.is_alive():
            return []
        self._flushing = None
        outcome = self._flushed.get_nowait()
        if isinstance(outcome, BaseException):  # a bug in the flush: raised where it can be seen
            raise outcome
        return outcome

    def _flush_apart(self, batch: list[tuple[Result, FetchTask]]) -> None:
        try:
            self._flushed.put(self._flush(batch))
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator, which raises it
            self._flushed.put(exc)

    def _flush(self, held: list[tuple[Result, FetchTask]]) -> list[Result]:
        """Data, names, folders, in that order; ``held`` is updated in place as files get their names."""
        out = self.options.output.out
        parts = [_inside(out, task.name) + PART_SUFFIX for _, task in held]
        try:
            staged = [part for part, (result, _) in zip(parts, held, strict=True) if result.staged]
            if staged and not syncfs(out):  # no syncfs here (not Linux): one fsync per file
                for part in staged:
                    sync_file(part)
            # The final name's path (a rename to "NAME (1).EXT" stays in its folder).
            targets = [part[:-len(PART_SUFFIX)] if result.path == task.name else _inside(out, result.path or "")
                       for part, (result, task) in zip(parts, held, strict=True)]
            for position, (result, task) in enumerate(held):
                if result.staged:  # placed once only, even if this flush is interrupted and run again
                    held[position] = (self._place(result, task, parts[position], targets[position]), task)
            sync_folders(out, [target for target, (result, _) in zip(targets, held, strict=True)
                               if result.status is Status.OK and result.path])
        except OSError as exc:  # the disk refused a flush: nothing of this batch can be vouched for
            return [self._unflushed(result, task, part, exc)
                    for (result, task), part in zip(held, parts, strict=True)]
        return [result for result, _ in held]

    def _place(self, result: Result, task: FetchTask, part: str, target: str) -> Result:
        assert result.path is not None
        try:  # target: the worker's safety walk checked this name already (Download._final_name)
            landed = placement.place(part, self.options.output.out, result.path, self.options.output.on_exists, target)
        except OSError as exc:
            return _failure(task, result, f"cannot write file: {exc.strerror or exc}", exc)
        if result.staged == 2:
            partial.discard_meta(part)
        if landed is None:  # --on-exists skip, and the name was taken while this one downloaded
            return placement.taken_meanwhile(task, result.path, self.options.output.out)
        # Result(*fields) with ``staged`` (the last field) left at 0: half the cost of dataclasses.replace.
        fields = result.__reduce__()[1]
        named = Result(*fields[:-1])
        return named if landed == result.path else dataclasses.replace(named, path=landed)

    def _unflushed(self, result: Result, task: FetchTask, part: str, exc: OSError) -> Result:
        """A Result of a batch whose flush failed: its file is removed and it fails (``io``, or ``storage``)."""
        if result.staged:
            partial.discard(part)
        elif result.status is Status.OK and result.path is not None:
            _remove_quietly(_inside(self.options.output.out, result.path))
        if result.status is not Status.OK:
            return result
        return _failure(task, result, f"cannot flush the file to disk: {exc.strerror or exc}", exc)


def _threads_are_real() -> bool:
    monkey = sys.modules.get("gevent.monkey")  # imported only where gevent patches the process
    return monkey is None or not monkey.is_module_patched("threading")


def _failure(task: FetchTask, result: Result, message: str, exc: OSError) -> Result:
    """Kind ``storage`` when the whole disk refuses (full, read-only: the run stops, as in
    download.py), else ``io``, a problem of this one file."""
    if exc.errno in STORAGE_ERRNOS:
        return failed(task, ErrorKind.STORAGE, message, retryable=True, elapsed_s=result.elapsed_s,
                      http_status=result.http_status)
    return failed(task, ErrorKind.IO, message, elapsed_s=result.elapsed_s, http_status=result.http_status)


def _inside(out: str, name: str) -> str:
    """The path the worker used for ``name`` (its safety walk passed there: see naming.locate)."""
    return os.path.abspath(os.path.join(out, name))


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
