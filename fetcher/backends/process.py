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

import ctypes
import multiprocessing
import os
import pickle
import queue
import select
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import partial
from multiprocessing import connection
from typing import TYPE_CHECKING, Any

from fetcher.backends.base import Backend, SessionFactory, run_task
from fetcher.errors import BackendError
from fetcher.models import ErrorKind, Result, Task, failed
from fetcher.options import MAX_PROCESSES
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
    slots: int  # its share of the pool
    ready: bool = False
    tasks: dict[int, Task] = field(default_factory=dict)  # sent and not yet answered, by index
    inbox: Any = None  # whether its pipe has a message (see _watching)

    def __post_init__(self) -> None:
        self.inbox = _watching(self.conn)

    @property
    def free(self) -> int:
        return self.slots - len(self.tasks) if self.ready else 0


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


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, options: Options, session_factory: SessionFactory | None = None, *,
                 start_method: str | None = None) -> None:
        super().__init__(options, session_factory)
        self._requested = resolve_start_method(start_method)
        self._workers: list[_Worker] = []
        self._pending: deque[Task] = deque()
        self._finished: list[Result] = []
        self._startup_failures = 0
        # Every worker's pipe and process sentinel, in one poll set kept across waits
        # (connection.wait would build a selector for all of them on every call).
        self._watch = select.poll()
        self._owners: dict[int, _Worker] = {}  # watched fd -> its worker

    @property
    def start_method(self) -> str:
        """How the next worker starts (see the module docstring)."""
        return self._requested or default_start_method()

    @classmethod
    def check(cls, options: Options, session_factory: SessionFactory | None = None) -> None:
        requested = resolve_start_method()
        if session_factory is not None and requested != "fork":
            _check_picklable(session_factory, requested or "forkserver")

    def _start(self) -> None:
        # With libcurl, each worker runs the multi backend; a caller's factory means threads.
        self._multi = self.session_factory is None and self.options.client == "curl"
        self._factory = self.session_factory or partial(make_session, self.options, 1)
        if self._requested != "fork":
            _check_picklable(self._factory, self._requested or "forkserver")
        # Import requests (and libcurl) once where workers come from, not once per worker:
        # here for fork, in the server for forkserver (started on first use, if ever).
        preload = ["fetcher.backends.process", "fetcher.download"]
        if self._multi:
            preload.append("fetcher.backends.multi")
        for module in preload:
            __import__(module)
        if "forkserver" in multiprocessing.get_all_start_methods():
            multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
        self._cancel = SharedFlag(multiprocessing.get_context())
        try:
            for slots in shares(self.options.pool, self.options.processes or min(default_processes(), MAX_PROCESSES)):
                self._workers.append(self._spawn(slots))
        except BaseException:
            self.shutdown(cancel=True)
            raise

    def _spawn(self, slots: int) -> _Worker:
        ctx = multiprocessing.get_context(self.start_method)
        parent_end, child_end = ctx.Pipe(duplex=True)
        # get_context(name) is typed as BaseContext; every concrete context has Process.
        process = ctx.Process(target=_worker_main, name="fetcher-worker", daemon=True,  # type: ignore[attr-defined]
                              args=(child_end, self._factory, self.options, self._cancel, slots, self._multi))
        process.start()
        child_end.close()  # so that a dead child's pipe reads as EOF here
        worker = _Worker(process, parent_end, slots)
        for fd in (parent_end.fileno(), process.sentinel):
            self._watch.register(fd, select.POLLIN)
            self._owners[fd] = worker
        return worker

    def submit(self, task: Task) -> None:
        # Sent in wait(), which the engine calls after each round of submits: one message per worker.
        self._pending.append(task)

    def wait(self, timeout: float | None) -> list[Result]:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._dispatch()
        while not self._finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self._poll(remaining)
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
                elif message[0] == _READY:
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


def _check_picklable(factory: SessionFactory, method: str) -> None:
    try:
        pickle.dumps(factory)
    except Exception as exc:  # noqa: BLE001 - pickle raises many types
        raise BackendError(f"the process backend's {method} start method sends the session factory to "
                           f"each worker, so it must pickle (a module-level function or a "
                           f"functools.partial of one): {type(exc).__name__}: {exc}") from None


def _worker_main(conn: connection.Connection, factory: SessionFactory, options: Options,
                 cancel: SharedFlag, slots: int, multi: bool) -> None:
    """A worker's life: run ``slots`` downloads at once, with tasks from the pipe, until told to stop."""
    # Ctrl-C reaches the whole process group; stopping workers is the parent's job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if multi:
            _serve_multi(conn, options, cancel, slots)
        else:
            _serve_threads(conn, factory, options, cancel, slots)
    except (EOFError, OSError):
        return  # the parent went away


def _next_batch(conn: connection.Connection, incoming: Any, parent: int) -> list[Task] | None:
    """The next message from the parent: a batch of tasks, or None for "stop" (also when orphaned).

    ``incoming``: a poll object watching ``conn`` (Connection.poll would build a selector per call).
    """
    while not incoming.poll(PARENT_CHECK_S * 1000):
        if os.getppid() != parent:  # orphaned: the parent died without stopping us
            return None
    batch: list[Task] | None = conn.recv()
    return batch


def _watching(conn: connection.Connection) -> Any:
    """A poll object that says when ``conn`` has a message (or is closed)."""
    incoming = select.poll()
    incoming.register(conn.fileno(), select.POLLIN)
    return incoming


def _serve_threads(conn: connection.Connection, factory: SessionFactory, options: Options,
                   cancel: SharedFlag, slots: int) -> None:
    """``slots`` threads, a session each, answering one result at a time."""
    parent = os.getppid()
    try:
        sessions = [factory() for _ in range(slots)]
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send((_INIT_FAILED, f"{type(exc).__name__}: {exc}"))
        return
    inbox: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
    send_lock = threading.Lock()

    def work(session: Any) -> None:
        try:
            while (task := inbox.get()) is not None:
                if cancel.is_set():
                    result = failed(task, ErrorKind.CANCELLED, "cancelled before it started")
                else:
                    result = run_task(task, session, options, cancel)
                with send_lock:
                    conn.send([result])
        except (EOFError, OSError):
            return  # the parent went away
        finally:
            session.close()

    threads = [threading.Thread(target=work, args=(session,), daemon=True) for session in sessions]
    for thread in threads:
        thread.start()
    with send_lock:
        conn.send((_READY, None))
    try:
        incoming = _watching(conn)
        while (batch := _next_batch(conn, incoming, parent)) is not None:
            for task in batch:
                inbox.put(task)
    finally:
        for _ in threads:
            inbox.put(None)
        deadline = time.monotonic() + CANCEL_GRACE_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _serve_multi(conn: connection.Connection, options: Options, cancel: SharedFlag, slots: int) -> None:
    """The multi backend with ``slots`` transfers, woken by the pipe as by libcurl; results go back in batches."""
    from fetcher.backends.multi import MultiBackend

    parent = os.getppid()
    backend = MultiBackend(replace(options, pool=slots))
    backend.wake_fds, backend.cancel = (conn.fileno(),), cancel
    try:
        backend.__enter__()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send((_INIT_FAILED, f"{type(exc).__name__}: {exc}"))
        return
    stopping = False
    incoming = _watching(conn)
    try:
        conn.send((_READY, None))
        checked = time.monotonic()
        while not stopping:
            while incoming.poll(0):
                batch = conn.recv()
                if batch is None:
                    stopping = True
                    break
                for task in batch:
                    backend.submit(task)
            if stopping:
                break
            if results := backend.wait(PARENT_CHECK_S):
                conn.send(results)
            if time.monotonic() - checked > PARENT_CHECK_S:
                checked = time.monotonic()
                stopping = stopping or os.getppid() != parent  # orphaned: stop
    finally:
        # The parent says stop only when nothing is in flight, or to cancel: then downloads end now.
        backend.shutdown(cancel=True)
