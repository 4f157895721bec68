"""The process backend: ``pool`` worker processes, each with its own Session.

Why not ``ProcessPoolExecutor``: when one of its children dies, the whole
executor breaks, every pending future fails with ``BrokenProcessPool``, and
nothing says which task the dead child was running. Here each worker talks to
the parent over its own pipe and is given one task at a time, so the parent
knows what a dead worker was doing: it starts a replacement and reports that
task as a retryable ``worker-died`` failure; whether to try it again is the
scheduler's decision (``--retries``, with backoff), as for any transient
failure, and no other task is touched. (Queueing a second task per
worker saved nothing measurable and let a quick task wait behind a slow one
while another worker sat idle.) No lock is
shared between processes, so a child killed at any instant cannot leave its
siblings or the parent blocked: the cancel flag is a lock-free shared byte,
not a ``multiprocessing.Event``, whose internal lock a SIGKILLed child may
hold forever. The parent needs no helper thread either: results are read in
``wait()``, on the caller's thread.

Start method: ``forkserver`` where the platform has it, else ``spawn``; choose
another with ``ProcessBackend(..., start_method=...)`` or the environment
variable ``FETCHER_START_METHOD`` (``fork``, ``forkserver`` or ``spawn``).
forkserver forks each worker from a clean server process that has already
imported requests, so workers start in milliseconds and share its pages, and
the parent's threads (a progress bar's monitor, an application's own) never
leak into a fork; Python 3.14 makes it the Linux default for that reason.
``fork`` starts fastest but is unsafe in a parent that runs threads; ``spawn``
works everywhere at the cost of a fresh interpreter per worker. Under
forkserver and spawn the session factory must pickle.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from multiprocessing import connection
from typing import TYPE_CHECKING, Any

from fetcher.backends.base import Backend, SessionFactory, run_task
from fetcher.errors import BackendError
from fetcher.models import ErrorKind, Result, Task, failed
from fetcher.session import make_session

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext
    from multiprocessing.process import BaseProcess

    from fetcher.options import Options

START_METHOD_ENV = "FETCHER_START_METHOD"
MAX_STARTUP_FAILURES = 3  # workers in a row that died before they were ready
CANCEL_GRACE_S = 1.0  # after this, workers still busy on a cancel are terminated
PARENT_CHECK_S = 1.0  # how often an idle worker checks that its parent still lives

_READY, _INIT_FAILED = "ready", "init-failed"


def default_start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def resolve_start_method(requested: str | None = None) -> str:
    """The start method to use: ``requested``, else ``$FETCHER_START_METHOD``, else the default.

    Raises:
        BackendError: the platform has no such start method.
    """
    method = requested or os.environ.get(START_METHOD_ENV) or default_start_method()
    available = multiprocessing.get_all_start_methods()
    if method not in available:
        raise BackendError(f"unknown process start method {method!r} (from {START_METHOD_ENV} or "
                           f"start_method=); choose one of: {', '.join(available)}")
    return method


class SharedFlag:
    """A cancel flag all workers see: one byte of shared memory, deliberately without a lock."""

    def __init__(self, ctx: BaseContext) -> None:
        self._value = ctx.RawValue(ctypes.c_bool, False)

    def set(self) -> None:
        self._value.value = True

    def is_set(self) -> bool:
        return bool(self._value.value)


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: connection.Connection
    ready: bool = False
    task: Task | None = None  # sent and not yet answered


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, options: Options, session_factory: SessionFactory | None = None, *,
                 start_method: str | None = None) -> None:
        super().__init__(options, session_factory)
        self.start_method = resolve_start_method(start_method)
        self._workers: list[_Worker] = []
        self._pending: deque[Task] = deque()
        self._finished: list[Result] = []
        self._startup_failures = 0

    def _start(self) -> None:
        self._ctx = multiprocessing.get_context(self.start_method)
        self._factory = self.session_factory or partial(make_session, self.options, 1)
        if self.start_method != "fork":
            _check_picklable(self._factory, self.start_method)
        # Import requests once where workers come from, not once per worker.
        if self.start_method == "forkserver":
            self._ctx.set_forkserver_preload(["fetcher.backends.process", "fetcher.download"])
        elif self.start_method == "fork":
            import fetcher.download  # noqa: F401
        self._cancel = SharedFlag(self._ctx)
        try:
            for _ in range(self.options.pool):
                self._workers.append(self._spawn())
        except BaseException:
            self.shutdown(cancel=True)
            raise

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        # get_context(name) is typed as BaseContext; every concrete context has Process.
        process = self._ctx.Process(target=_worker_main, name="fetcher-worker", daemon=True,  # type: ignore[attr-defined]
                                    args=(child_end, self._factory, self.options, self._cancel))
        process.start()
        child_end.close()  # so that a dead child's pipe reads as EOF here
        return _Worker(process, parent_end)

    def submit(self, task: Task) -> None:
        self._pending.append(task)
        self._dispatch()

    def wait(self, timeout: float | None) -> list[Result]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self._poll(remaining)
        results, self._finished = self._finished, []
        return results

    def _poll(self, timeout: float | None) -> None:
        """Wait for any worker to answer or die, handle that, and refill idle workers."""
        owners: dict[Any, _Worker] = {}
        for worker in self._workers:
            owners[worker.conn] = owners[worker.process.sentinel] = worker
        for worker in {owners[ready] for ready in connection.wait(list(owners), timeout)}:
            if not self._receive(worker):
                self._replace(worker)
        self._dispatch()

    def _receive(self, worker: _Worker) -> bool:
        """Handle every message waiting from ``worker``; False once it is gone."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if isinstance(message, Result):
                    worker.task = None
                    self._finished.append(message)
                elif message[0] == _READY:
                    worker.ready = True
                    self._startup_failures = 0
                else:
                    raise BackendError(f"the session factory failed in a worker process: {message[1]}")
        except (EOFError, OSError):
            return False
        return worker.process.is_alive()

    def _replace(self, worker: _Worker) -> None:
        """A worker died: start another, and report the task it was running (the scheduler may retry it)."""
        code = _reap(worker)
        self._workers.remove(worker)
        if not worker.ready:
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                raise BackendError(f"{self._startup_failures} worker processes in a row exited before they were "
                                   f"ready ({_describe_exit(code)}; start method {self.start_method})")
        if (task := worker.task) is not None:
            self._finished.append(failed(task, ErrorKind.WORKER_DIED,
                                         f"the worker process fetching this URL died ({_describe_exit(code)})",
                                         retryable=True))
        self._workers.append(self._spawn())

    def _dispatch(self) -> None:
        for worker in self._workers:
            if not self._pending:
                return
            if worker.ready and worker.task is None:
                task = self._pending.popleft()
                try:
                    worker.conn.send(task)
                except OSError:  # it is dying; _poll will see that and replace it
                    self._pending.appendleft(task)
                    continue
                worker.task = task

    def shutdown(self, cancel: bool = False) -> None:
        interrupted = True
        try:
            while not cancel and (self._pending or any(w.task is not None for w in self._workers)):
                self._poll(None)
            interrupted = cancel
        finally:
            # Draining failed (Ctrl-C, a BackendError): stop as promptly as a cancel would.
            self._stop(cancel=interrupted)

    def _stop(self, cancel: bool) -> None:
        if cancel:
            self._cancel.set()
            self._pending.clear()
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + CANCEL_GRACE_S if cancel else None
        for worker in self._workers:
            worker.process.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            _reap(worker)
        self._workers.clear()


def _reap(worker: _Worker) -> int | None:
    """Make sure the worker's process is gone (terminate, then kill); return its exit code."""
    process = worker.process
    if process.is_alive():
        process.terminate()
        process.join(CANCEL_GRACE_S)
    if process.is_alive():
        process.kill()
    process.join()
    code = process.exitcode
    process.close()
    worker.conn.close()
    return code


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _check_picklable(factory: SessionFactory, method: str) -> None:
    try:
        pickle.dumps(factory)
    except Exception as exc:  # noqa: BLE001 - pickle raises many types
        raise BackendError(f"the process backend's {method} start method sends the session factory to "
                           f"each worker, so it must pickle (a module-level function or a "
                           f"functools.partial of one): {type(exc).__name__}: {exc}") from None


def _worker_main(conn: connection.Connection, factory: SessionFactory, options: Options,
                 cancel: SharedFlag) -> None:
    """A worker's life: make a session, then run tasks from the pipe until told to stop."""
    # Ctrl-C reaches the whole process group; stopping workers is the parent's job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    try:
        session = factory()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send((_INIT_FAILED, f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send((_READY, None))
        while True:
            if not conn.poll(PARENT_CHECK_S):
                if os.getppid() != parent:  # orphaned: the parent died without stopping us
                    return
                continue
            task = conn.recv()
            if task is None:
                return
            if cancel.is_set():
                result = failed(task, ErrorKind.CANCELLED, "cancelled before it started")
            else:
                result = run_task(task, session, options, cancel)
            conn.send(result)
    except (EOFError, OSError):
        return  # the parent went away
    finally:
        session.close()
