"""``--durability``: what a power loss can take, and the one place that decides the flushes.

A ``.part`` renamed when whole keeps a final name complete across a kill -9,
because the page cache survives it. A power loss does not: the kernel may put
a rename on disk before the data, leaving a final name on an empty or cut
file, and a journal row may claim a file whose name never reached the disk.
So with ``batch`` and ``full`` every file goes through this order, and the
rerun (resume.py) trusts only what the order guarantees::

    body -> NAME.part -> data flushed -> rename to NAME -> folder flushed -> journal row committed

- ``batch`` (default): a worker leaves the finished body in ``NAME.part`` and
  hands back a *staged* Result (``Result.staged``). The coordinating process,
  which alone sees every worker's files (threads, processes, a multi loop), wraps
  its backend in a ``Flusher``: every ``FLUSH_EVERY_S`` (or ``FLUSH_EVERY_N``
  files, or when nothing else is running) one ``syncfs(2)`` makes the data of
  the whole batch durable, then the batch's no-clobber renames run
  (placement.place), then its folders (and their parents up to the output
  folder, which may be new) are fsynced, and only then do the Results reach the
  collector and the journal. Measured (README, Durability): one syncfs per batch
  costs about what the writes cost, ``fdatasync`` per file three to four times
  more, because each one is a journal commit of the filesystem on its own.
  The rename moves from the worker to the coordinator because it must wait for
  the batch's flush, and only the coordinator knows the batch.
- ``full``: each worker ``fdatasync``s its ``.part`` before its own rename, so a
  Result never waits for a batch; the Flusher only fsyncs the folders before
  handing Results on. syncfs flushes the whole filesystem, other programs'
  dirty data too: on a disk shared with a heavy writer, ``full`` flushes only
  fetcher's files.
- ``none``: no flush at all (the speed of earlier versions). After a power loss
  files may be empty or cut under their final names; the rerun verifies them.

The journal (journal.py) runs with ``synchronous=FULL`` under ``batch`` and
``full``: a committed row is then on disk, so a row, once written after its
folder's flush, can be trusted by every later run (commits are batched, two or
so a second, so this costs a few fsyncs of the WAL a second). Under ``none`` it
keeps ``NORMAL``. Whatever the level, the run's own row (its level and the boot
it ran in) is committed with a sync before any file of the run is placed: the
rerun decides from it what to trust (``suspect_runs``). A ``batch`` or ``full``
run also begins with one syncfs of the output folder, so whatever earlier runs
of the same boot left there is on disk before it vouches for any of it.

``fetch_one`` called outside an engine (no Flusher: a direct call, or ``fetcher
work`` on a worker host) still keeps the order, file by file: fdatasync, rename,
fsync of the folder.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fetcher import partial, placement
from fetcher.backends.base import Backend
from fetcher.models import ErrorKind, Result, Status, Task, failed
from fetcher.naming import PART_SUFFIX

if TYPE_CHECKING:
    from fetcher.backends.base import BackendFactory, SessionFactory
    from fetcher.options import Options

BATCH, FULL, NONE = "batch", "full", "none"
LEVELS = (BATCH, FULL, NONE)
DEFAULT = BATCH
# What a worker sees inside a Flusher (set by ``wrap``, never by users): ``batch`` becomes
# STAGED (leave the body in .part, the Flusher renames), ``full`` becomes SYNCED (fdatasync and
# rename here, the Flusher fsyncs the folders).
STAGED, SYNCED = "staged", "synced"
DURABLE = frozenset({BATCH, FULL, STAGED, SYNCED})
FLUSH_EVERY_S = 0.1  # longest a finished file waits for its batch's flush
FLUSH_EVERY_N = 1000  # files per flush at most


# -- the system calls ------------------------------------------------------------------------


def boot_id() -> str | None:
    """This boot's id (Linux), or None where the kernel does not tell: a run of another boot
    may have lost its page cache to a power loss; one of this boot cannot have."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


_libc_syncfs: Any = None


def syncfs(path: str) -> bool:
    """``syncfs(2)`` of the filesystem holding ``path``; False where there is no syncfs (not Linux)."""
    global _libc_syncfs
    if not sys.platform.startswith("linux"):
        return False
    if _libc_syncfs is None:
        import ctypes  # here: only a durable run pays for loading it

        _libc_syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        _libc_syncfs.argtypes = [ctypes.c_int]
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc_syncfs(fd) != 0:  # ctypes releases the GIL: workers go on meanwhile
            import ctypes

            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)
    return True


def sync_data(fd: int) -> None:
    """Flush a file's data (and its size) to the disk: fdatasync, or fsync where there is none."""
    getattr(os, "fdatasync", os.fsync)(fd)


def sync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sync_data(fd)
    finally:
        os.close(fd)


def sync_folders(out: str, paths: Iterable[str]) -> None:
    """fsync the folder of each path and every folder above it up to ``out`` (one may be new)."""
    root = os.path.abspath(out)
    folders: set[str] = set()
    for path in paths:
        folder = os.path.dirname(path)
        while folder not in folders and len(folder) >= len(root):
            folders.add(folder)
            if folder == root:
                break
            folder = os.path.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def begin_run(options: Options) -> None:
    """Before a durable run's journal row: make what earlier runs left in ``out`` durable."""
    if options.durability in DURABLE and not options.in_memory:
        syncfs(options.out)


# -- the worker's side -----------------------------------------------------------------------


def stages(options: Options) -> bool:
    """The worker leaves a finished body in .part for the Flusher to rename."""
    return options.durability == STAGED


def syncs_each_file(options: Options) -> bool:
    """The worker fdatasyncs each .part before renaming it."""
    return options.durability in (SYNCED, BATCH, FULL)


def after_rename(options: Options, target: str) -> None:
    """No Flusher above this worker: flush the folder of a file it just renamed."""
    if options.durability in (BATCH, FULL):
        sync_folders(options.out, [target])


# -- the coordinator's side ------------------------------------------------------------------


def wrap(factory: BackendFactory, options: Options, session_factory: SessionFactory | None) -> Backend:
    """The backend to run: ``factory``'s, inside a Flusher unless nothing needs flushing."""
    if options.durability not in (BATCH, FULL) or options.in_memory:
        return factory(options, session_factory)
    inner = dataclasses.replace(options, durability=STAGED if options.durability == BATCH else SYNCED)
    return Flusher(factory(inner, session_factory), options)


class Flusher(Backend):
    """A backend around a backend: holds finished files until their batch is durable.

    Results that placed no file of this run (failures, skips) pass at once.
    Held Results do not count against the window (``capacity``), so the
    workers never wait for a flush.
    """

    name = "flusher"

    def __init__(self, inner: Backend, options: Options) -> None:
        super().__init__(options)
        self.inner = inner
        self._tasks: dict[int, Task] = {}  # submitted and not yet handed back, by index
        self._held: list[Result] = []
        self._due = 0.0  # when the oldest held Result must be flushed

    def _start(self) -> None:
        self.inner.__enter__()

    def submit(self, task: Task) -> None:
        self._tasks[task.index] = task
        self.inner.submit(task)

    def capacity(self, window: int) -> int:
        return self.inner.capacity(window) + len(self._held)

    def shutdown(self, cancel: bool = False) -> None:
        try:
            self.inner.shutdown(cancel)
        finally:
            for result in self._held:  # a cancelled run: staged bodies never got a name
                task = self._tasks.get(result.index)
                if result.staged and task is not None:
                    partial.discard(_inside(self.options.out, task.name) + PART_SUFFIX)
            self._held.clear()

    def wait(self, timeout: float | None) -> list[Result]:
        now = time.monotonic()
        if self._held:
            timeout = max(0.0, min(self._due - now, FLUSH_EVERY_S if timeout is None else timeout))
        ready: list[Result] = []
        for result in self.inner.wait(timeout):
            if self._placed_a_file(result):
                if not self._held:
                    self._due = time.monotonic() + FLUSH_EVERY_S
                self._held.append(result)
            else:
                self._tasks.pop(result.index, None)
                ready.append(result)
        held = len(self._held)
        if held and (held >= FLUSH_EVERY_N or time.monotonic() >= self._due or held == len(self._tasks)):
            ready += self.flush()
        return ready

    def _placed_a_file(self, result: Result) -> bool:
        return bool(result.staged) or (result.status is Status.OK and result.path is not None)

    def flush(self) -> list[Result]:
        """Data, names, folders: the held Results, durable, in that order."""
        held, self._held = self._held, []
        tasks = [self._tasks.pop(result.index) for result in held]
        out = self.options.out
        parts = [_inside(out, task.name) + PART_SUFFIX for task in tasks]
        staged = [part for part, result in zip(parts, held, strict=True) if result.staged]
        done: list[Result] = []
        try:
            if staged and not syncfs(out):
                for part in staged:
                    sync_file(part)
            done = [self._place(result, task, part) if result.staged else result
                    for result, task, part in zip(held, tasks, parts, strict=True)]
            sync_folders(out, [_inside(out, r.path) for r in done if r.status is Status.OK and r.path])
        except OSError as exc:  # the disk refused a flush: nothing of this batch can be vouched for
            return [self._unflushed(result, task, part, exc) for result, task, part in
                    zip(done or held, tasks, parts, strict=True)]
        return done

    def _place(self, result: Result, task: Task, part: str) -> Result:
        assert result.path is not None
        try:
            landed = placement.place(part, self.options.out, result.path, self.options.on_exists)
        except OSError as exc:
            return failed(task, ErrorKind.IO, f"cannot write file: {exc.strerror or exc}",
                          elapsed_s=result.elapsed_s, http_status=result.http_status)
        if result.staged == 2:
            partial.discard_meta(part)
        if landed is None:  # --on-exists skip, and the name was taken while this one downloaded
            return placement.taken_meanwhile(task, result.path, self.options.out)
        return dataclasses.replace(result, path=landed, staged=0)

    def _unflushed(self, result: Result, task: Task, part: str, exc: OSError) -> Result:
        if result.staged:
            partial.discard(part)
        elif result.status is Status.OK and result.path is not None:
            _remove_quietly(_inside(self.options.out, result.path))
        if result.status is not Status.OK:
            return result
        return failed(task, ErrorKind.IO, f"cannot flush the file to disk: {exc.strerror or exc}",
                      elapsed_s=result.elapsed_s, http_status=result.http_status)


def _inside(out: str, name: str) -> str:
    """The path the worker used for ``name`` (its safety walk passed there: see naming.locate)."""
    return os.path.abspath(os.path.join(out, name))


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


# -- the rerun's side ------------------------------------------------------------------------


def suspect_runs(history: Iterable[tuple[int, str | None, str | None]], this_run: int,
                 boot: str | None) -> set[int]:
    """Earlier runs whose files a power loss may have emptied or cut, from ``(run, level, boot)`` rows.

    A run is above suspicion if it was ``batch`` or ``full`` (its order was kept),
    if it ran in this boot (no power was lost since: the page cache still holds
    all it wrote), or if a later ``batch``/``full`` run of its boot began, since
    that one's first syncfs put everything before it on disk. Journals older than
    this module have no level: their runs count as ``none``.
    """
    rows = [row for row in history if row[0] != this_run]
    suspect: set[int] = set()
    for position, (run, level, run_boot) in enumerate(rows):
        if level in (BATCH, FULL) or (run_boot is not None and run_boot == boot):
            continue
        if run_boot is not None and any(later_level in (BATCH, FULL) and later_boot == run_boot
                                        for _, later_level, later_boot in rows[position + 1:]):
            continue
        suspect.add(run)
    return suspect
