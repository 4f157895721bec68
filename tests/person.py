"""Running fetcher as a person does: in a pseudo-terminal, into a pipe that closes early, onto a
small or read-only filesystem. Every wait is bounded; every process started is stopped by PID.

The filesystems are real: a tmpfs mounted for the test (``mount`` needs root, which CI has).
Where the tests run without root, ``small_disk`` skips with the reason, except under CI
(``CI=true``), where a test that cannot mount fails: those tests must never be skipped there.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
from ci import missing

TIMEOUT_S = 60.0  # a hang guard, not a timing assertion


def fetcher_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "fetcher", *args]


def run_in_terminal(args: Sequence[str], timeout: float = TIMEOUT_S,
                    columns: int = 100) -> tuple[int, str]:
    """``python -m fetcher ARGS`` with stdin, stdout and stderr on a pseudo-terminal: (exit code, screen)."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = dict(os.environ, TERM="xterm", COLUMNS=str(columns))
    process = subprocess.Popen(fetcher_command(args), stdin=slave, stdout=slave, stderr=slave,
                               env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    chunk = b""
                if not chunk:
                    break
                screen += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        os.close(master)
    return code, screen.decode("utf-8", "replace")


def run_into_closing_pipe(args: Sequence[str], keep_lines: int, merge_stderr: bool = True,
                          timeout: float = TIMEOUT_S) -> tuple[int, list[str], str]:
    """Like ``fetcher ARGS 2>&1 | head -N``: read ``keep_lines`` lines, then close the pipe.

    Returns (exit code, the lines read, stderr when it was not merged).
    """
    process = subprocess.Popen(fetcher_command(args), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while len(lines) < keep_lines:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.decode("utf-8", "replace"))
        process.stdout.close()  # the reader goes away, as head does
        _, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return process.returncode, lines, (err or b"").decode("utf-8", "replace")


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and sys.platform.startswith("linux")


@contextmanager
def small_disk(size: str = "2m", read_only: bool = False) -> Iterator[str]:
    """A fresh tmpfs of ``size`` (mounted read-only if asked), unmounted afterwards."""
    if not can_mount():
        missing("needs root to mount a small tmpfs (a full or read-only disk); CI runs as root")
    folder = tempfile.mkdtemp(prefix="fetcher-disk-")
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", folder], check=True, timeout=30)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", folder], check=False, timeout=30)
        os.rmdir(folder)


def remount(folder: str, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", folder], check=True, timeout=30)


def assert_one_clear_line(text: str, *needles: str) -> None:
    """No traceback; the message is there, in one line that holds every needle."""
    assert "Traceback" not in text, text
    assert any(all(n in line for n in needles) for line in text.splitlines()), text
