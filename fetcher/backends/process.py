"""The process backend: worker processes, one per core by default, sharing the pool.

``--pool`` stays the number of concurrent downloads; they are spread over
``--processes`` workers (default: one per CPU, never more than the pool). A
worker runs its share either as threads with a session each (``--client
requests``, or a caller's ``session_factory``) or, with ``--client curl``, as
one libcurl multi loop (the multi backend, inside the worker): the pool uses
every core, and each process's GIL is shared by few threads or none. Measured
on 5,000 small files from nginx (issue 8), one process per core beat one
process per download, and used a fraction of the memory.

Why not ``ProcessPoolExecutor``: when one of its children dies, the whole
executor breaks, every pending future fails with ``BrokenProcessPool``, and
nothing says which tasks the dead child was running. Here each worker talks
to the parent over its own pipe and is sent only as many tasks as it has free
slots, so the parent knows what a dead worker was doing: it starts a
replacement and reports each of those tasks as a retryable ``worker-died``
failure; whether to try one again is the scheduler's decision (``--retries``,
with backoff), as for any transient failure, and no other worker is touched.
Tasks go out and results come back in batches (one pipe message per wake-up,
not per file). No lock is shared between processes, so a child killed at any
instant cannot leave its siblings or the parent blocked: the cancel flag is a
lock-free shared byte, not a ``multiprocessing.Event``, whose internal lock a
SIGKILLed child may hold forever. The parent needs no helper thread either:
results are read in ``wait()``, on the caller's thread.

How workers start (the start method, how many, their shares): process_start.py.
What each worker runs: process_worker.py.
"""

from __future__ import annotations

import multiprocessing
import select
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import connection
from typing import TYPE_CHECKING, Any

from fetcher.backends.base import Backend, SessionFactory
from fetcher.backends.process_start import (START_METHOD_ENV, check_picklable, default_processes,
                                            default_start_method, resolve_start_method, shares)
from fetcher.backends.process_worker import READY, Serve, SharedFlag, serve_multi, serve_threads, watching, worker_main
from fetcher.download.partial import give_up
from fetcher.errors import BackendError
from fetcher.models import ErrorKind, Result, FetchTask, failed
from fetcher.options import MAX_PROCESSES
from fetcher.transports.factory import make_session

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from fetcher.options import Options

__all__ = ["START_METHOD_ENV", "ProcessBackend", "ProcessCurlBackend", "default_start_method", "shares"]

MAX_STARTUP_FAILURES = 3  # workers in a row that died before they were ready
CANCEL_GRACE_S = 1.0  # after this, workers still busy on a cancel are terminated


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: connection.Connection
    slots: int  # its share of the pool
    ready: bool = False
    tasks: dict[int, FetchTask] = field(default_factory=dict)  # sent and not yet answered, by index
    inbox: Any = None  # whether its pipe has a message (see _watching)

    def __post_init__(self) -> None:
        self.inbox = watching(self.conn)

    @property
    def free(self) -> int:
        return self.slots - len(self.tasks) if self.ready else 0


class ProcessBackend(Backend):
    """Worker processes that each run their share of the pool as threads, a transport each.

    ``serve`` is what each worker runs (process_worker.py); ``ProcessCurlBackend`` runs
    a libcurl multi loop there instead.
    """

    name = "process"
    serve: Serve = staticmethod(serve_threads)
    # Imported once where workers come from (see _start), not once per worker.
    preload: tuple[str, ...] = ("fetcher.backends.process_worker", "fetcher.download.attempt")

    def __init__(self, options: Options, session_factory: SessionFactory | None = None, *,
                 start_method: str | None = None) -> None:
        super().__init__(options, session_factory)
        self._requested = resolve_start_method(start_method)
        self._workers: list[_Worker] = []
        self._pending: deque[FetchTask] = deque()
        self._finished: list[Result] = []
        self._startup_failures = 0
        # Every worker's pipe and process sentinel, in one poll set kept across waits
        # (connection.wait would build a selector for all of them on every call).
        self._watch = select.poll()
        self._owners: dict[int, _Worker] = {}  # watched fd -> its worker

    def _session_factory(self) -> SessionFactory | None:
        """What each worker thread fetches through: the caller's factory, else a transport per thread."""
        return self.session_factory or partial(make_session, self.options, 1)

    @property
    def start_method(self) -> str:
        """How the next worker starts (see the module docstring)."""
        return self._requested or default_start_method()

    @classmethod
    def check(cls, options: Options, session_factory: SessionFactory | None = None) -> None:
        requested = resolve_start_method()
        if session_factory is not None and requested != "fork":
            check_picklable(session_factory, requested or "forkserver")

    def _start(self) -> None:
        self._factory = self._session_factory()
        if self._requested != "fork" and self._factory is not None:
            check_picklable(self._factory, self._requested or "forkserver")
        # Import requests (and libcurl) once where workers come from, not once per worker:
        # here for fork, in the server for forkserver (started on first use, if ever).
        preload = list(self.preload)
        for module in preload:
            __import__(module)
        if "forkserver" in multiprocessing.get_all_start_methods():
            multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
        self._cancel = SharedFlag(multiprocessing.get_context())
        try:
            transport = self.options.transport
            for slots in shares(transport.pool, transport.processes or min(default_processes(), MAX_PROCESSES)):
                self._workers.append(self._spawn(slots))
        except BaseException:
            self.shutdown(cancel=True)
            raise

    def _spawn(self, slots: int) -> _Worker:
        ctx = multiprocessing.get_context(self.start_method)
        parent_end, child_end = ctx.Pipe(duplex=True)
        # get_context(name) is typed as BaseContext; every concrete context has Process.
        process = ctx.Process(target=worker_main, name="fetcher-worker", daemon=True,  # type: ignore[attr-defined]
                              args=(child_end, self.serve, self._factory, self.options, self._cancel, slots))
        process.start()
        child_end.close()  # so that a dead child's pipe reads as EOF here
        worker = _Worker(process, parent_end, slots)
        for fd in (parent_end.fileno(), process.sentinel):
            self._watch.register(fd, select.POLLIN)
            self._owners[fd] = worker
        return worker

    def submit(self, task: FetchTask) -> None:
        # Sent in wait(), which the engine calls after each round of submits: one message per worker.
        self._pending.append(task)

    def wait(self, timeout: float | None) -> list[Result]:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._dispatch()
        while not self._finished:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            # At least one look at the pipes, even for timeout 0: a wait(0) that never read them
            # left the results of full workers unread while the engine asked again and again (issue 19).
            self._poll(remaining)
            if remaining == 0:
                break
        results, self._finished = self._finished, []
        return results

    def _poll(self, timeout: float | None) -> None:
        """Wait for any worker to answer or die, handle that, and refill idle workers."""
        ready: dict[_Worker, bool] = {}  # worker -> whether its process sentinel fired
        for fd, _events in self._watch.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)):
            worker = self._owners[fd]
            ready[worker] = ready.get(worker, False) or fd == worker.process.sentinel
        for worker, ended in ready.items():
            if not self._receive(worker) or (ended and not worker.process.is_alive()):
                self._replace(worker)
        self._dispatch()

    def _receive(self, worker: _Worker) -> bool:
        """Handle every message waiting from ``worker``; False once its pipe is closed."""
        try:
            while worker.inbox.poll(0):
                message = worker.conn.recv()
                if isinstance(message, list):
                    for result in message:
                        worker.tasks.pop(result.index, None)
                    self._finished.extend(message)
                elif message[0] == READY:
                    worker.ready = True
                    self._startup_failures = 0
                else:
                    raise BackendError(f"the session factory failed in a worker process: {message[1]}")
        except (EOFError, OSError):
            return False
        return True

    def _replace(self, worker: _Worker) -> None:
        """A worker died: start another, and report the tasks it was running (the scheduler may retry them)."""
        self._forget(worker)
        code = _reap(worker)
        self._workers.remove(worker)
        if not worker.ready:
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                raise BackendError(f"{self._startup_failures} worker processes in a row exited before they were "
                                   f"ready ({_describe_exit(code)}; start method {self.start_method})")
        for task in worker.tasks.values():
            if not self.options.rules.will_retry(task.attempt, retryable=True):
                give_up(task, self.options)  # what the dead worker left: no retry will resume it
            self._finished.append(failed(task, ErrorKind.WORKER_DIED,
                                         f"the worker process fetching this URL died ({_describe_exit(code)})",
                                         retryable=True))
        self._workers.append(self._spawn(worker.slots))

    def _dispatch(self) -> None:
        """Send pending tasks to the workers with free slots, the emptiest first, a batch each."""
        while self._pending:
            worker = max(self._workers, key=lambda w: w.free, default=None)
            if worker is None or worker.free <= 0:
                return
            batch = [self._pending.popleft() for _ in range(min(worker.free, len(self._pending)))]
            try:
                worker.conn.send(batch)
            except OSError:  # it is dying; _poll will see that and replace it
                self._pending.extendleft(reversed(batch))
                worker.ready = False  # no more tasks for it
                continue
            for task in batch:
                worker.tasks[task.index] = task

    def shutdown(self, cancel: bool = False) -> None:
        interrupted = True
        try:
            while not cancel and (self._pending or any(w.tasks for w in self._workers)):
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
            self._forget(worker)
            _reap(worker)
        self._workers.clear()

    def _forget(self, worker: _Worker) -> None:
        """Stop watching ``worker``'s pipe and sentinel (before they are closed, and their numbers reused)."""
        for fd in [fd for fd, owner in self._owners.items() if owner is worker]:
            self._watch.unregister(fd)
            del self._owners[fd]


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


class ProcessCurlBackend(ProcessBackend):
    """Worker processes that each run their share of the pool as one libcurl multi loop
    (the multi backend, inside the worker): no thread per download there either."""

    serve = staticmethod(serve_multi)
    preload = (*ProcessBackend.preload, "fetcher.backends.multi")

    @classmethod
    def check(cls, options: Options, session_factory: SessionFactory | None = None) -> None:
        if session_factory is not None:
            raise BackendError("--client curl makes its own libcurl handles: it takes no session_factory")

    def _session_factory(self) -> SessionFactory | None:
        self.check(self.options, self.session_factory)
        return None
