"""Helpers for tests that run fetcher in other processes: the CLI, process trees, a crashing session.

Importable by worker processes too (tests/ is on sys.path, which spawn and
forkserver pass on), so the session factory below can cross a pickle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from fetcher.transports.factory import make_session

HAVE_PROC = os.path.isdir("/proc/self")
RUN_TIMEOUT_S = 60  # a hang guard, not a timing assertion


@dataclass(frozen=True)
class Variant:
    """One backend as the contract runs it: a name, for process a start method, and extra flags."""

    backend: str
    start_method: str | None = None
    flags: tuple[str, ...] = ()  # e.g. ("--client", "curl"): process workers then run libcurl multi loops

    @property
    def id(self) -> str:
        return "-".join([self.backend, *([self.start_method] if self.start_method else []),
                         *(flag.lstrip("-") for flag in self.flags)])

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("FETCHER_START_METHOD", None)
        if self.start_method:
            env["FETCHER_START_METHOD"] = self.start_method
        return env


def cli_command(variant: Variant, args: Sequence[str]) -> list[str]:
    # A pair is named in full: without --client the CLI would pick one (auto), not requests.
    client = () if "--client" in variant.flags else ("--client", "requests")
    return [sys.executable, "-m", "fetcher", *args, "--backend", variant.backend, *client, *variant.flags]


def run_cli(variant: Variant, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """``python -m fetcher ARGS --backend B`` in a fresh process (so gevent patching stays there)."""
    return subprocess.run(cli_command(variant, args), env=variant.env(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)


def read_manifest(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def files_in_place(out: str) -> int:
    """How many downloaded files are under their final names in ``out`` (no ``.part``, no manifest).

    What a kill -9 cannot take back, and what a rerun finds and skips: waited for instead of sleeping
    past the journal's flush interval and hoping (the journal commits a batch only when a later
    result comes, so during a lull its last rows are not yet on the disk).
    """
    count = 0
    for folder, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if d != ".fetcher"]
        count += sum(1 for name in files if not name.endswith((".part", ".meta")) and not name.startswith("manifest"))
    return count


def part_files(root: str) -> list[str]:
    found = []
    for folder, _dirs, files in os.walk(root):
        found += [os.path.join(folder, name) for name in files if name.endswith(".part")]
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition",
               state: Callable[[], object] | None = None) -> None:
    """Poll ``condition`` every 20 ms; fail the test if it is still false after ``timeout``.

    ``state``, if given, is called on failure and shown in the message.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"; state: {state()}" if state else ""))
        time.sleep(0.02)


# -- process trees, read from /proc (Linux) -----------------------------------------------------

def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a live process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
            starts[int(entry)] = stat[2]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def still_running(processes: dict[int, int]) -> list[int]:
    """The pids of ``processes`` that still run (zombies waiting for a reaper count as gone)."""
    alive = []
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == start and stat[1] not in ("Z", "X"):
            alive.append(pid)
    return alive


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(root: int) -> list[int]:
    """Download workers under ``root``: leaf descendants that are not multiprocessing's resource tracker."""
    tree = descendants(root)
    parents = {stat[0] for pid in tree if (stat := _stat(pid)) is not None}
    return [pid for pid in tree if pid not in parents and "resource_tracker" not in cmdline(pid)]


def interrupt_group(process: subprocess.Popen[str]) -> None:
    """Ctrl-C as a terminal sends it: SIGINT to the whole process group."""
    os.killpg(process.pid, signal.SIGINT)


def kill_group(process: subprocess.Popen[str]) -> None:
    """Clean up after a failed test: SIGKILL the process and everything in its group, then reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.communicate(timeout=RUN_TIMEOUT_S)


# -- a session that kills its own process on some URLs ------------------------------------------

KILL_MARKER = "/kill-me/"


class SuicidalSession(requests.Session):
    """Dies by SIGKILL when asked for a URL containing KILL_MARKER, like a crashing decoder would."""

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if KILL_MARKER in str(url):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().get(url, **kwargs)


def suicidal_session(options: Any) -> requests.Session:
    """A picklable session factory (module level) building a SuicidalSession like make_session would."""
    base = make_session(options, 1).session  # the requests transport's own Session
    session = SuicidalSession()
    session.headers.update(base.headers)
    for prefix, adapter in base.adapters.items():
        session.mount(prefix, adapter)
    return session
