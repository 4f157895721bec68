"""How the process backend's workers start: the start method, how many, each one's share of the pool.

Start method, unless chosen with ``ProcessBackend(..., start_method=...)`` or
the environment variable ``FETCHER_START_METHOD`` (``fork``, ``forkserver`` or
``spawn``): ``fork`` while the parent runs a single thread, else
``forkserver`` where the platform has it, else ``spawn``; decided again for
each worker started, replacements included. ``fork`` is unsafe only in a
parent that runs threads (one may hold a lock the child then needs), and
with one thread there is none; it starts workers fastest and saves
forkserver's own interpreter: 0.06 ms of CPU per file and 37 MiB on 5,000
small files (issue 8). The fetcher command runs one thread (its progress
bar has no monitor thread). forkserver forks each worker from a clean server
process that has already imported requests, so the parent's threads (an
application's own) never leak into a fork; Python 3.14 makes it the Linux
default for that reason. ``spawn`` works everywhere at the cost of a fresh
interpreter per worker. The session factory must pickle unless ``fork`` was
asked for by name, so a factory that works today keeps working in a parent
that starts a thread tomorrow.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading

from fetcher.backends.base import SessionFactory
from fetcher.errors import BackendError

START_METHOD_ENV = "FETCHER_START_METHOD"


def default_start_method() -> str:
    """``fork`` while this process runs one thread (nothing to leak into a fork), else the safe one."""
    available = multiprocessing.get_all_start_methods()
    if "fork" in available and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in available else "spawn"


def resolve_start_method(requested: str | None = None) -> str | None:
    """The start method asked for: ``requested``, else ``$FETCHER_START_METHOD``; None: the default, per worker.

    Raises:
        BackendError: the platform has no such start method.
    """
    method = requested or os.environ.get(START_METHOD_ENV)
    if method is None:
        return None
    available = multiprocessing.get_all_start_methods()
    if method not in available:
        raise BackendError(f"unknown process start method {method!r} (from {START_METHOD_ENV} or "
                           f"start_method=); choose one of: {', '.join(available)}")
    return method


def shares(pool: int, processes: int) -> list[int]:
    """The pool split as evenly as it goes over ``processes`` workers (at most one per download)."""
    count = max(1, min(pool, processes))
    base, extra = divmod(pool, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def default_processes() -> int:
    """One worker per CPU this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_picklable(factory: SessionFactory, method: str) -> None:
    try:
        pickle.dumps(factory)
    except Exception as exc:  # noqa: BLE001 - pickle raises many types
        raise BackendError(f"the process backend's {method} start method sends the session factory to "
                           f"each worker, so it must pickle (a module-level function or a "
                           f"functools.partial of one): {type(exc).__name__}: {exc}") from None
