"""The process backend's worker side: what runs inside each worker process.

A worker gets batches of tasks over its pipe, runs ``slots`` downloads at once and
sends Results back in batches, until the parent says stop (``None``) or dies. How it
runs them is the ``serve`` function the backend class chose: threads with a
transport each (``serve_threads``), or one libcurl multi loop (``serve_multi``).
Both are module-level functions, so every start method (fork, forkserver, spawn)
can send them to the child.
"""

from __future__ import annotations

import ctypes
import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from multiprocessing import connection
from typing import TYPE_CHECKING, Any

from fetcher.backends.base import SessionFactory, run_task
from fetcher.models import ErrorKind, FetchTask, failed

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

    from fetcher.backends.multi import MultiBackend
    from fetcher.options import Options

PARENT_CHECK_S = 1.0  # how often an idle worker checks that its parent still lives
CANCEL_GRACE_S = 1.0  # threads still busy after a stop are abandoned (the process exits)
READY, INIT_FAILED = "ready", "init-failed"


class SharedFlag:
    """A cancel flag all workers see: one byte of shared memory, deliberately without a lock."""

    def __init__(self, ctx: BaseContext) -> None:
        self._value = ctx.RawValue(ctypes.c_bool, False)

    def set(self) -> None:
        self._value.value = True

    def is_set(self) -> bool:
        return bool(self._value.value)


Serve = Callable[[connection.Connection, "SessionFactory | None", "Options", SharedFlag, int], None]


def worker_main(conn: connection.Connection, serve: Serve, factory: SessionFactory | None, options: Options,
                cancel: SharedFlag, slots: int) -> None:
    """A worker's life: run ``slots`` downloads at once, with tasks from the pipe, until told to stop."""
    # Ctrl-C reaches the whole process group; stopping workers is the parent's job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(conn, factory, options, cancel, slots)
    except (EOFError, OSError):
        return  # the parent went away


def _next_batch(conn: connection.Connection, incoming: Any, parent: int) -> list[FetchTask] | None:
    """The next message from the parent: a batch of tasks, or None for "stop" (also when orphaned).

    ``incoming``: a poll object watching ``conn`` (Connection.poll would build a selector per call).
    """
    while not incoming.poll(PARENT_CHECK_S * 1000):
        if os.getppid() != parent:  # orphaned: the parent died without stopping us
            return None
    batch: list[FetchTask] | None = conn.recv()
    return batch


def serve_threads(conn: connection.Connection, factory: SessionFactory | None, options: Options,
                  cancel: SharedFlag, slots: int) -> None:
    """``slots`` threads, a session each, answering one result at a time."""
    # Over 40 lines: the threads and the loop that feeds them share its locals (inbox, lock, pipe).
    parent = os.getppid()
    assert factory is not None, "the thread workers are given their session factory"
    try:
        sessions = [factory() for _ in range(slots)]
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send((INIT_FAILED, f"{type(exc).__name__}: {exc}"))
        return
    inbox: queue.SimpleQueue[FetchTask | None] = queue.SimpleQueue()
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
        conn.send((READY, None))
    try:
        incoming = watching(conn)
        while (batch := _next_batch(conn, incoming, parent)) is not None:
            for task in batch:
                inbox.put(task)
    finally:
        for _ in threads:
            inbox.put(None)
        deadline = time.monotonic() + CANCEL_GRACE_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def serve_multi(conn: connection.Connection, factory: SessionFactory | None, options: Options,
                cancel: SharedFlag, slots: int) -> None:
    """The multi backend with ``slots`` transfers, woken by the pipe as by libcurl; results go back in batches."""
    from fetcher.backends.multi import MultiBackend

    backend = MultiBackend(options.replace(pool=slots), wake_fds=(conn.fileno(),), cancel=cancel)
    with ExitStack() as stack:
        try:
            stack.enter_context(backend)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send((INIT_FAILED, f"{type(exc).__name__}: {exc}"))
            return
        # The parent says stop only when nothing is in flight, or to cancel: then downloads end now.
        stack.callback(backend.shutdown, cancel=True)
        _multi_loop(conn, backend)


def _multi_loop(conn: connection.Connection, backend: MultiBackend) -> None:
    parent = os.getppid()
    stopping = False
    incoming = watching(conn)
    conn.send((READY, None))
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


def watching(conn: connection.Connection) -> Any:
    """A poll object that says when ``conn`` has a message (or is closed)."""
    incoming = select.poll()
    incoming.register(conn.fileno(), select.POLLIN)
    return incoming
