"""A freshly created filesystem for every measured run.

On a long-lived root filesystem, creating thousands of files right after
deleting thousands costs seconds of extra system time, so every figure would
depend on the run before it. A loop-mounted ext4 image made per run (or a
tmpfs, where loop devices are unavailable) starts every tool from the same
empty state.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

MIB = 1024 * 1024
EXT4, TMPFS, PLAIN = "ext4 loop image", "tmpfs", "plain directory"
_counter = itertools.count(1)


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def image_dir(workdir: str, needed: int) -> str:
    """Where to keep images: /dev/shm when it has room, so their backing store is RAM.

    An image on the root disk would leave its dirty pages to be written back to
    that disk during later runs; on /dev/shm nothing outlives the run.
    """
    try:
        stats = os.statvfs("/dev/shm")
        if stats.f_bavail * stats.f_frsize > 2 * needed:
            return tempfile.mkdtemp(prefix="fetcher-bench-img-", dir="/dev/shm")
    except OSError:
        pass
    return workdir


class FreshFilesystems:
    """Makes one empty filesystem per run, in the best mode this machine allows."""

    def __init__(self, workdir: str, images: str) -> None:
        self.workdir, self.images = workdir, images
        self.mode = PLAIN
        self.why_not: list[str] = []

    def probe(self, wanted: str = "auto") -> str:
        """Pick the mode once: ext4 loop, else tmpfs, else a plain directory (with a warning)."""
        if wanted == "plain":
            print("WARNING: --fs plain: downloading into plain directories on the temp dir's "
                  "filesystem; figures will depend on the runs before them.", file=sys.stderr)
            return PLAIN
        candidates = {"auto": (EXT4, TMPFS), "ext4": (EXT4,), "tmpfs": (TMPFS,)}[wanted]
        for mode in candidates:
            try:
                with self._mounted(mode, 64 * MIB, 1024):
                    pass
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                self.why_not.append(f"{mode}: {exc}")
                continue
            self.mode = mode
            return mode
        print("WARNING: " + "=" * 70, file=sys.stderr)
        print(f"WARNING: could not mount a fresh filesystem ({' or '.join(candidates)});", file=sys.stderr)
        print("WARNING: downloading into plain directories: figures will vary run to run.", file=sys.stderr)
        for reason in self.why_not:
            print(f"WARNING:   {reason}", file=sys.stderr)
        print("WARNING: " + "=" * 70, file=sys.stderr)
        return PLAIN

    @contextlib.contextmanager
    def fresh(self, data_bytes: int, files: int) -> Iterator[str]:
        """An empty directory on a filesystem made for this run; gone afterwards."""
        # Room for the data, the per-file block slack and ext4's metadata.
        size = max(128 * MIB, int(data_bytes * 1.3) + files * 8192 + 64 * MIB)
        with self._mounted(self.mode, size, files) as path:
            yield path

    @contextlib.contextmanager
    def _mounted(self, mode: str, size: int, files: int) -> Iterator[str]:
        run_id = next(_counter)
        mountpoint = os.path.join(self.workdir, f"out-{run_id}")
        os.makedirs(mountpoint)
        image = os.path.join(self.images, f"out-{run_id}.img")
        mounted = False
        try:
            if mode == EXT4:
                _make_ext4(image, size, files)
                _check(_run(["mount", "-o", "loop,noatime", image, mountpoint]), "mount -o loop")
                mounted = True
            elif mode == TMPFS:
                _check(_run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                             mountpoint]), "mount -t tmpfs")
                mounted = True
            yield mountpoint
        finally:
            if mounted:
                _unmount(mountpoint)
            with contextlib.suppress(FileNotFoundError):
                os.remove(image)
            shutil.rmtree(mountpoint, ignore_errors=True)


def _make_ext4(image: str, size: int, files: int) -> None:
    with open(image, "wb") as handle:
        handle.truncate(size)  # sparse
    inodes = max(16384, 2 * files + 1024)
    # lazy init off: otherwise a kernel thread zeroes inode tables in the
    # background during the measured run.
    _check(_run(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", str(inodes),
                 "-E", "lazy_itable_init=0,lazy_journal_init=0", image]), "mkfs.ext4")


def _unmount(mountpoint: str) -> None:
    for _ in range(5):  # bounded: a straggler holding a file gets a few chances to exit
        if _run(["umount", mountpoint]).returncode == 0:
            return
        time.sleep(0.5)
    _run(["umount", "-l", mountpoint])  # last resort: detach lazily


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[:200]}")
