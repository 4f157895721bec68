"""Run one command and measure its whole process tree: wall time, CPU, peak RSS.

CPU comes from ``os.wait4`` on the tool's root process: the kernel's rusage of a
reaped child includes every descendant that child reaped in turn (worker
processes, curl's threads), so it is the tree's user+sys without sampling error.
A descendant orphaned before it was reaped (a multiprocessing forkserver, say)
would take its CPU to init; with ``become_subreaper()`` it is re-parented to the
harness instead, which reaps it after the root and adds its rusage.

Peak RSS has no such counter (``ru_maxrss`` is the largest *single* process), so
a thread samples the tool's process group in /proc every ~20 ms and keeps the
largest sum. The tool runs in its own session, so its group is exactly the tree.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_INTERVAL_S = 0.02
# Listing /proc costs ~1 ms of the harness's CPU on a 2-core box shared with the
# tool; re-listing every 5th sample finds new workers within 100 ms, and the
# samples in between only re-read the processes already known.
RESCAN_EVERY = 5
STDERR_TAIL_CHARS = 600
PR_SET_CHILD_SUBREAPER = 36
MAX_ORPHANS = 10_000


def become_subreaper() -> bool:
    """Make orphaned descendants our children (Linux ≥ 3.4), so their CPU is not lost."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class Measurement:
    """What one run of one command cost."""

    exit_code: int
    wall_s: float
    cpu_s: float  # user + sys of the root process and every descendant it reaped
    sys_s: float  # the system part of cpu_s (file creation, socket calls)
    peak_rss: int  # bytes: max over samples of the summed RSS of the process group
    timed_out: bool
    stderr_tail: str


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(b")") + 2:].decode("ascii", "replace").split()


def _rss_of(fields: list[str]) -> int:
    return int(fields[21]) * PAGE_SIZE  # field 24, rss in pages


def _group_members(pgid: int) -> set[int]:
    members = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and int(fields[2]) == pgid:  # field 5, pgrp
                members.add(int(name))
    return members


class TreeSampler(threading.Thread):
    """Samples the summed RSS of one process group until stopped; keeps the peak."""

    def __init__(self, pgid: int, interval: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(name=f"rss-sampler-{pgid}", daemon=True)
        self.pgid, self.interval = pgid, interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        members: set[int] = {self.pgid}
        tick = 0
        # Bounded: the owner stops us as soon as the root process has been reaped.
        while True:
            if tick % RESCAN_EVERY == 0:
                members = _group_members(self.pgid) or members
            total = 0
            for pid in list(members):
                fields = _stat_fields(pid)
                if fields is None or int(fields[2]) != self.pgid:
                    members.discard(pid)  # exited (or the PID was reused)
                else:
                    total += _rss_of(fields)
            self.peak = max(self.peak, total)
            tick += 1
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=5)
        return self.peak


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - STDERR_TAIL_CHARS))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def run_measured(argv: Sequence[str], *, cwd: str, env: dict[str, str], timeout_s: float,
                 stdout_path: str, stderr_path: str) -> Measurement:
    """Run ``argv`` to completion (or kill it after ``timeout_s``) and measure it."""
    timed_out = threading.Event()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()

    def on_timeout() -> None:
        timed_out.set()
        _kill_group(proc.pid)

    killer = threading.Timer(timeout_s, on_timeout)
    killer.start()
    try:
        _, status, usage = _wait4_retrying(proc.pid)
        wall = time.perf_counter() - started
    except BaseException:  # Ctrl-C: take the tool down with us, then re-raise
        _kill_group(proc.pid)
        try:
            _wait4_retrying(proc.pid)
        except ChildProcessError:
            pass  # already reaped
        raise
    finally:
        killer.cancel()
        peak = sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits on a reaped PID
    _kill_group(proc.pid)  # stragglers that outlived the root must not leak into the next run
    orphan_user, orphan_sys = _reap_orphans(proc.pid)
    return Measurement(exit_code=proc.returncode, wall_s=wall,
                       cpu_s=usage.ru_utime + usage.ru_stime + orphan_user + orphan_sys,
                       sys_s=usage.ru_stime + orphan_sys,
                       # Not ru_maxrss: after fork+exec it still counts the harness's own
                       # pre-exec copy (~30 MiB), whatever the tool really used.
                       peak_rss=peak,
                       timed_out=timed_out.is_set(), stderr_tail=_tail(stderr_path))


def _reap_orphans(pgid: int) -> tuple[float, float]:
    """Reap members of the tool's group re-parented to us; their (user, sys) seconds."""
    user = system = 0.0
    for _ in range(MAX_ORPHANS):  # bounded; each pass reaps one (already killed) process
        try:
            _, _, usage = os.wait4(-pgid, 0)
        except ChildProcessError:  # none of our children is left in that group
            break
        user, system = user + usage.ru_utime, system + usage.ru_stime
    return user, system


def _wait4_retrying(pid: int) -> tuple[int, int, resource.struct_rusage]:
    # PEP 475 retries EINTR itself; the loop only guards against a spurious return.
    for _ in range(1000):
        got, status, usage = os.wait4(pid, 0)
        if got == pid:
            return got, status, usage
    raise RuntimeError(f"wait4({pid}) never returned the process")
