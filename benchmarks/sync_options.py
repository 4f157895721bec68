#!/usr/bin/env python3
"""The ways to make small files durable before their names, measured alone (issue 17).

    python benchmarks/sync_options.py DIR [--files 3000] [--reps 2]

Writes ``--files`` files of 4-64 KiB (seeded sizes) as ``NAME.part`` under DIR and
renames each to ``NAME``, once per strategy, in a fresh subfolder each time,
repetitions interleaved; prints files/s and CPU µs per file (user+sys of this
process; the kernel's writeback threads are not counted). DIR should be a fresh
filesystem, e.g. an ext4 image loop-mounted as benchmarks/run.py does. Standard
library only; never asserts a timing.

- none: write, rename (no flush: what a kill -9 survives, not a power loss)
- fdatasync: write, fdatasync, rename; the folder fsynced every 256 files
- fdatasync x8: the same from 8 threads (the filesystem may group their commits)
- syncfs/256: 256 files written, one syncfs, 256 renames, the folder fsynced
- syncfs/0.1s: as above, one syncfs per 0.1 s of files (what ``--durability batch`` does)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import resource
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

BATCH = 256
BLOB = os.urandom(65536)
_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        raise OSError(ctypes.get_errno(), "syncfs")


def _write(path: str, size: int, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, BLOB[:size])
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def none(folder: str, sizes: list[int]) -> None:
    for i, size in enumerate(sizes):
        _write(f"{folder}/f{i}.part", size, False)
        os.rename(f"{folder}/f{i}.part", f"{folder}/f{i}")


def fdatasync_each(folder: str, sizes: list[int]) -> None:
    for i, size in enumerate(sizes):
        _write(f"{folder}/f{i}.part", size, True)
        os.rename(f"{folder}/f{i}.part", f"{folder}/f{i}")
        if i % BATCH == BATCH - 1:
            _fsync_dir(folder)
    _fsync_dir(folder)


def fdatasync_threads(folder: str, sizes: list[int]) -> None:
    def one(i: int) -> None:
        _write(f"{folder}/f{i}.part", sizes[i], True)
        os.rename(f"{folder}/f{i}.part", f"{folder}/f{i}")

    with ThreadPoolExecutor(8) as pool:
        for start in range(0, len(sizes), BATCH):
            list(pool.map(one, range(start, min(len(sizes), start + BATCH))))
            _fsync_dir(folder)


def _flush(folder: str, fd: int, staged: list[int]) -> None:
    _syncfs(fd)
    for i in staged:
        os.rename(f"{folder}/f{i}.part", f"{folder}/f{i}")
    _fsync_dir(folder)


def syncfs_count(folder: str, sizes: list[int]) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        for start in range(0, len(sizes), BATCH):
            staged = list(range(start, min(len(sizes), start + BATCH)))
            for i in staged:
                _write(f"{folder}/f{i}.part", sizes[i], False)
            _flush(folder, fd, staged)
    finally:
        os.close(fd)


def syncfs_period(folder: str, sizes: list[int], period: float = 0.1) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        staged: list[int] = []
        last = time.monotonic()
        for i, size in enumerate(sizes):
            _write(f"{folder}/f{i}.part", size, False)
            staged.append(i)
            if time.monotonic() - last >= period:
                _flush(folder, fd, staged)
                staged, last = [], time.monotonic()
        _flush(folder, fd, staged)
    finally:
        os.close(fd)


STRATEGIES: dict[str, Callable[[str, list[int]], None]] = {
    "none": none, "fdatasync": fdatasync_each, "fdatasync x8": fdatasync_threads,
    "syncfs/256": syncfs_count, "syncfs/0.1s": syncfs_period,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(17)
    sizes = [rng.randint(4096, 65536) for _ in range(args.files)]
    for rep in range(1, args.reps + 1):
        for name, strategy in STRATEGIES.items():
            folder = os.path.join(args.dir, f"run-{rep}-{name.replace('/', '_').replace(' ', '')}")
            os.makedirs(folder)
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            strategy(folder, sizes)
            wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            print(f"[{rep}/{args.reps}] {name:<13} {args.files / wall:8,.0f} files/s  "
                  f"{cpu / args.files * 1e6:6.0f} µs CPU/file", flush=True)
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
