"""``--durability``: what a power loss can take, and the one place that decides the flushes.

A ``.part`` renamed when whole keeps a final name complete across a kill -9,
because the page cache survives it. A power loss does not: the kernel may put
a rename on disk before the data, leaving a final name on an empty or cut
file, and a journal row may claim a file whose name never reached the disk.
So with ``batch`` and ``full`` every file goes through this order, and the
rerun (resume.py) trusts only what the order guarantees::

    body -> NAME.part -> data flushed -> rename to NAME -> folder flushed -> journal row committed

- ``batch`` (default): a worker leaves the finished body in ``NAME.part`` and
  hands back a *staged* Result (``Result.staged``). The engine, in the
  coordinating process that alone sees every worker's files (threads, processes,
  a multi loop), passes each Result through a ``Flusher`` (run/flusher.py) between
  the scheduler and the collector: at most every ``FLUSH_EVERY_S`` (or at once
  past ``FLUSH_EVERY_N`` files, or when nothing else runs) one ``syncfs(2)``
  makes the data of the whole batch durable, then the batch's no-clobber renames
  run (placement.place), then its folders, and their parents up to the output
  folder (one may be new), are fsynced, and only then do the Results reach the
  collector and the journal. Measured (README, Durability): one syncfs per batch
  costs a fraction of an ``fdatasync`` per file, each of which is a commit of
  the filesystem's own journal. The rename moves from the worker to the
  coordinator because it must wait for the batch's flush, which only the
  coordinator sees; the scheduler has settled the task already, so a held file
  keeps no worker, window slot or per-host slot.
- ``full``: each worker ``fdatasync``s its ``.part`` before its own rename, so a
  Result waits for no data flush; the Flusher only fsyncs the folders before
  handing Results on. syncfs flushes the whole filesystem, other programs'
  dirty data too: on a disk shared with a heavy writer, ``full`` flushes only
  fetcher's files.
- ``none``: no flush at all (the speed of earlier versions). After a power loss
  files may be empty or cut under their final names; the rerun verifies them.

The journal (run/journal.py) runs with ``synchronous=FULL`` under ``batch`` and
``full``: a committed row is then on disk, so a row, once written after its
folder's flush, can be trusted by every later run (commits are batched, two or
so a second, so this costs a few fsyncs of the WAL a second). ``NORMAL`` syncs
the WAL only at checkpoints, so a power loss could roll back every commit since
the last one: harmless to the order (the files of lost rows would be hashed
again), but then "done URLs are not requested again" would cost a re-read of
each. Under ``none`` it keeps ``NORMAL``. Whatever the level, the run's own row (its level and the boot
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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fetcher.options import Options

BATCH, FULL, NONE = "batch", "full", "none"
LEVELS = (BATCH, FULL, NONE)
DEFAULT = BATCH
# Under an engine's Flusher (``worker_options`` sets ``Options.engine_flushes``, run state no user sets), a
# worker of a ``batch`` run leaves the body in .part (the Flusher renames), one of a ``full`` run fdatasyncs
# and renames it (the Flusher fsyncs the folders).
DURABLE = frozenset({BATCH, FULL})
FLUSH_EVERY_S = 0.1  # flushes at most this often (the first at once): the longest a finished file waits
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


def begin_run(options: Options) -> str:
    """Before a durable run's journal row: make what earlier runs left in ``out`` durable.

    Returns the level to record for the run: its own, or ``none`` if that first flush
    failed (then a later boot reads this run's files back rather than trust them).
    """
    if options.output.durability not in DURABLE or options.output.in_memory:
        return options.output.durability
    try:
        syncfs(options.output.out)
    except OSError:
        return NONE
    return options.output.durability


# -- the worker's side -----------------------------------------------------------------------


def stages(options: Options) -> bool:
    """The worker leaves a finished body in .part for the Flusher to rename."""
    return options.engine_flushes and options.output.durability == BATCH


def syncs_each_file(options: Options) -> bool:
    """The worker fdatasyncs each .part before renaming it."""
    return options.output.durability in DURABLE and not stages(options)


def after_rename(options: Options, target: str) -> None:
    """No Flusher above this worker: flush the folder of a file it just renamed."""
    if options.output.durability in DURABLE and not options.engine_flushes:
        sync_folders(options.output.out, [target])


# -- the coordinator's side (flusher.py holds the files until their batch is durable) -----------


def worker_options(options: Options) -> Options:
    """The options the backend's workers get when the engine's Flusher stands behind them."""
    if options.output.in_memory or options.output.durability not in DURABLE:
        return options
    return dataclasses.replace(options, engine_flushes=True)


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
