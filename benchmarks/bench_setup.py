"""Installing the tools (Debian packages), and describing the machine and their versions."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

APT_TIMEOUT_S = 600
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


@dataclass(frozen=True)
class Package:
    """A program and the Debian packages that provide it, best first."""

    binary: str
    packages: tuple[str, ...]


NGINX = Package("nginx", ("nginx-light", "nginx"))
CURL = Package("curl", ("curl",))
WGET2 = Package("wget2", ("wget2",))
ARIA2C = Package("aria2c", ("aria2",))


def which(binary: str) -> str | None:
    """Like shutil.which, but also looks in sbin (nginx is there and not on a user's PATH)."""
    found = shutil.which(binary)
    if found:
        return found
    for folder in SBIN:
        candidate = os.path.join(folder, binary)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class Installer:
    """``apt-get install`` as root; otherwise say exactly what to run. Updates lists once."""

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self._updated = False

    def ensure(self, package: Package) -> tuple[str | None, str]:
        """Return (path, "") when the program is there (installing it if need be), else (None, why)."""
        path = which(package.binary)
        if path:
            return path, ""
        command = f"apt-get install -y {package.packages[0]}"
        if not self.allowed:
            return None, f"not installed and --no-install given; install with: sudo {command}"
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            return None, f"not installed; install it with: sudo {command}"
        errors = []
        for name in package.packages:
            ok, error = self._apt_install(name)
            path = which(package.binary)
            if ok and path:
                return path, ""
            errors.append(f"{name}: {error or 'installed, but ' + package.binary + ' not found'}")
        return None, "apt-get install failed (" + "; ".join(errors) + ")"

    def _apt_install(self, name: str) -> tuple[bool, str]:
        print(f"installing {name} with apt-get ...", file=sys.stderr)
        ok, error = _apt(["install", "-y", "--no-install-recommends", name])
        if not ok and not self._updated:
            # A fresh machine has empty package lists: update once, then retry.
            self._updated = True
            _apt(["update"])
            ok, error = _apt(["install", "-y", "--no-install-recommends", name])
        return ok, error


def _apt(args: list[str]) -> tuple[bool, str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        proc = subprocess.run(["apt-get", "-q", *args], capture_output=True, text=True, env=env,
                              timeout=APT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return False, f"apt-get {args[0]} timed out after {APT_TIMEOUT_S} s"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode == 0, (lines[-1] if lines else f"exit {proc.returncode}")


def first_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    """The first non-empty line a ``--version`` style command prints (stdout or stderr)."""
    try:
        # cwd "/": never let a fetcher/ folder in the current directory shadow the one measured.
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd="/",
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo(field: str) -> int:
    """A /proc/meminfo field in bytes (0 if unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_gib() -> float:
    return _meminfo("MemTotal") / 2**30


def available_memory() -> int:
    return _meminfo("MemAvailable")


def machine_lines() -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"date:    {now}",
        f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_model()}, "
        f"{memory_gib():.0f} GiB RAM, {platform.system()} {platform.release()} ({platform.machine()})",
    ]


def git_describe(repo: str) -> str:
    """Commit of the code under test, with '+dirty' when the work tree has changes."""
    if not shutil.which("git"):
        return "unknown"
    rev = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, timeout=60, check=False)
    if rev.returncode != 0:
        return "unknown: not a git checkout"
    head = rev.stdout.strip()
    status = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=60, check=False)
    return head + ("+dirty" if status.stdout.strip() else "")


def prefault_memory(nbytes: int, chunk: int = 1 << 20) -> float:
    """Touch ``nbytes`` of RAM once and free it; returns the seconds it took.

    On a virtual machine the host backs guest memory on first touch: there,
    writing fresh pages (page cache for downloaded files included) was seen to
    cost ~4x more system time than reusing pages touched before, so the first
    runs after boot would be slower than later ones for no fault of the tool.
    The kernel hands freed pages out again first, so touching more than the
    benchmark's working set up front makes every run pay the same.
    """
    import mmap

    started = time.monotonic()
    zeros = b"\0" * chunk
    with mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as area:
        for _ in range(nbytes // chunk):  # bounded: nbytes / chunk writes
            area.write(zeros)
    return time.monotonic() - started


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")
