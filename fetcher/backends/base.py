"""The backend interface: an executor of ``fetch_one`` and nothing more.

A backend runs submitted Tasks concurrently and hands back their Results. It
knows nothing of retries, hosts, progress or manifests: the engine owns policy,
the collector owns reporting. That narrow seam is what lets a thread pool, a
process pool, a gevent pool and remote workers sit behind one ``--backend``.
"""

from __future__ import annotations

import queue
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

from fetcher.models import ErrorKind, Result, FetchTask, failed

if TYPE_CHECKING:
    import requests

    from fetcher.options import Options
    from fetcher.download.guards import CancelFlag
    from fetcher.transports.base import Transport

# Returns what fetch_one fetches through: a transport (transports.factory.make_session) or a requests.Session.
SessionFactory = Callable[[], "Transport | requests.Session"]
BackendFactory = Callable[["Options", "SessionFactory | None"], "Backend"]


class Backend(ABC):
    """Runs ``fetch_one`` over submitted tasks with ``options.transport.pool`` of them at once.

    Use as a context manager: entering starts the workers, leaving stops them
    (cancelling unfinished work if the block raised). Between the two:

    - ``submit(task)`` queues a task; it never blocks for long and never fails
      for a bad URL (that comes back as a failed Result).
    - ``wait(timeout)`` returns the Results finished so far, blocking up to
      ``timeout`` seconds for at least one. Every submitted task yields exactly
      one Result unless the backend is shut down with ``cancel=True``.
    - ``shutdown(cancel)`` stops the workers: after the queued tasks finish, or
      promptly with ``cancel=True`` (downloads in flight stop between chunks
      and remove their ``.part`` files).

    Subclasses implement ``_start``, ``submit`` and ``shutdown`` and report
    each Result through ``_deliver``, from any thread, or override ``wait``
    to collect Results on the caller's thread.
    """

    name: ClassVar[str]

    def __init__(self, options: Options, session_factory: SessionFactory | None = None) -> None:
        self.options = options
        self.session_factory = session_factory
        self._results: queue.SimpleQueue[Result] = queue.SimpleQueue()

    @classmethod
    def check(cls, options: Options, session_factory: SessionFactory | None = None) -> None:
        """Raise BackendError if this backend cannot run here with these settings.

        Called before anything starts (the CLI, ``fetch()`` and ``Fetcher()``), so a
        backend that cannot run is a ConfigError at once, not a failure of every URL.
        """

    def __enter__(self) -> Backend:
        self._start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown(cancel=exc_type is not None)

    @abstractmethod
    def _start(self) -> None:
        """Start the workers."""

    @abstractmethod
    def submit(self, task: FetchTask) -> None:
        """Queue one task."""

    @abstractmethod
    def shutdown(self, cancel: bool = False) -> None:
        """Stop the workers; with ``cancel``, promptly, abandoning queued tasks."""

    def capacity(self, window: int) -> int:
        """How many tasks may be submitted and unfinished now: ``window`` for a local pool.

        A backend whose workers come and go (remote) answers with what they can start.
        """
        return window

    def abandon(self, tasks: Iterable[FetchTask]) -> None:
        """After a cancelled run: the tasks submitted and never answered. A download that could
        not stop in time (a stuck read, a worker terminated) left its ``.part``: it goes, unless
        a later run can resume it (``download.partial.abandon``)."""
        from fetcher.download.partial import abandon

        for task in tasks:
            abandon(task, self.options)

    def wait(self, timeout: float | None) -> list[Result]:
        """Results finished so far; blocks up to ``timeout`` seconds for the first."""
        try:
            first = self._results.get(timeout=timeout)
        except queue.Empty:
            return []
        results = [first]
        while True:
            try:
                results.append(self._results.get_nowait())
            except queue.Empty:
                return results

    def _deliver(self, result: Result) -> None:
        self._results.put(result)


def run_task(task: FetchTask, session: Transport | requests.Session, options: Options,
             cancel: CancelFlag | None = None) -> Result:
    """``fetch_one`` with a last safety net: a bug becomes an ``internal`` Result.

    A worker function that raises stops or hangs a pool, so nothing may escape.
    """
    from fetcher.download.attempt import fetch_one

    try:
        return fetch_one(task, session, options, cancel)
    except Exception as exc:  # noqa: BLE001 - the pool must survive any bug
        return internal_failure(task, exc)


def internal_failure(task: FetchTask, exc: Exception) -> Result:
    """A bug met while fetching ``task``, as its failed Result: the type, message and where it was raised."""
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return failed(task, ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})")
