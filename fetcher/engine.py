"""The engine: input → scheduler → backend → collector, with bounded work in flight.

At most ``options.window`` tasks are submitted and unfinished at any time, so a
list of millions of URLs is read as the downloads go, never all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import replace

from fetcher import durability, partial
from fetcher.backends import get_backend
from fetcher.backends.base import Backend, BackendFactory, SessionFactory
from fetcher.collector import Collector
from fetcher.flusher import Flusher
from fetcher.errors import Interrupted, StorageError
from fetcher.models import ErrorKind, Result, Status, Task
from fetcher.naming import PART_SUFFIX, join_within
from fetcher.options import Options
from fetcher.scheduler import Scheduler
from fetcher.streaming import CancelFlag

MAX_WAIT_S = 0.25  # also the longest a cancel waits to be seen
_STORAGE = ErrorKind.STORAGE.value


def run(items: Iterator[Task | Result | None], options: Options, collector: Collector,
        session_factory: SessionFactory | None = None, backend_factory: BackendFactory | None = None) -> None:
    """Fetch every item, reporting each final Result to ``collector`` exactly once.

    Returns when every item is final; see ``results`` for the rest.
    """
    with closing(results(items, options, session_factory, backend_factory=backend_factory)) as finals:
        for result in finals:
            collector.record(result)


def results(items: Iterator[Task | Result | None], options: Options,
            session_factory: SessionFactory | None = None,
            wait_for_more: Callable[[float], bool] | None = None,
            cancel: CancelFlag | None = None,
            backend_factory: BackendFactory | None = None,
            storage_stops: bool = True) -> Generator[Result, None, None]:
    """Fetch every item and yield each final Result once, as downloads finish.

    ``items`` is pulled lazily, only when a worker is free. An item may be
    ``None``: "no input right now" (a crawl waiting for its own results). The
    input is then asked again after the next result; if nothing is in flight
    or waiting for a retry, the run is over, unless ``wait_for_more(timeout)``
    is given: it is then called to block until more input may be there, and
    returns False when no more will ever come (``Fetcher`` uses this).

    ``cancel``, checked at least every ``MAX_WAIT_S``, stops the run by raising
    Interrupted. ``backend_factory`` replaces ``options.backend`` (``fetcher
    serve`` passes its RemoteBackend). A download that found the disk full or
    read-only (kind ``storage``) ends the run with StorageError while
    ``storage_stops`` (every later file would fail the same way; the URL stays
    unfinished for the next run); without it (a remote worker's disk) it is
    retried like any transient failure. On an exception (KeyboardInterrupt included), or when the
    consumer stops early, the backend is cancelled and the ``.part`` files of unfinished
    downloads are removed unless a later run can resume them.
    """
    scheduler = Scheduler(items, options)
    in_flight: dict[int, Task] = {}
    # A local backend's files reach the disk in the order --durability asks (durability.py);
    # a backend_factory's (fetcher serve: remote workers) are not here to flush.
    flusher = Flusher(options if backend_factory is None else replace(options, durability=durability.NONE))
    try:
        if backend_factory is not None:
            backend = backend_factory(options, session_factory)
        else:
            backend = get_backend(options.backend)(durability.worker_options(options), session_factory)
        with backend:
            yield from _drive(scheduler, backend, in_flight, options.window, options.out, wait_for_more, cancel,
                              flusher, storage_stops)
    except GeneratorExit:  # the consumer stopped: nobody to hand the held files to
        _remove_partials(options.out, in_flight.values())
        flusher.abandon()
        raise
    except BaseException:
        _remove_partials(options.out, in_flight.values())
        try:  # downloads that finished before the interrupt are named and reported, as without a Flusher
            finished = flusher.ready(idle=True)
        except BaseException:
            flusher.abandon()
            raise
        yield from finished
        raise


def _drive(scheduler: Scheduler, backend: Backend, in_flight: dict[int, Task], window: int, out: str,
           wait_for_more: Callable[[float], bool] | None, cancel: CancelFlag | None,
           flusher: Flusher, storage_stops: bool = True) -> Iterator[Result]:
    asked_again = False  # see below: the input's "nothing right now" is confirmed once before the end
    while True:
        if cancel is not None and cancel.is_set():
            raise Interrupted("cancelled")
        limit = backend.capacity(window)
        while len(in_flight) < limit:
            item = scheduler.next_ready()
            if item is None:
                break
            asked_again = False
            if isinstance(item, Result):  # a bad input line: final already
                yield item
                continue
            in_flight[item.index] = item
            backend.submit(item)
        if not in_flight and scheduler.idle:
            flushed = flusher.ready(idle=True)
            if flushed:
                asked_again = False
                yield from _checked(flushed, storage_stops)
                continue
            if scheduler.done:
                return
            if wait_for_more is None:
                # A None may have been read before the last results came back (the
                # journal reads the input in batches), while the caller has added
                # URLs since: ask once more before calling the run over.
                if asked_again:
                    return
                asked_again = True
                continue
            if not wait_for_more(MAX_WAIT_S):
                return
            continue
        timeout = min(t for t in (scheduler.seconds_until_next(), flusher.seconds_until_due(), MAX_WAIT_S)
                      if t is not None)
        for result in _checked(backend.wait(timeout), storage_stops):
            task = in_flight.pop(result.index)
            final = scheduler.settle(task, result)
            if final is None:
                continue
            if final.status is Status.FAILED:
                _discard_partial(out, task)  # kept for a retry that will not come
            asked_again = False
            final = flusher.add(final, task)  # a file not yet on the disk waits for its batch
            if final is not None:
                yield final
        yield from _checked(flusher.ready(idle=not in_flight), storage_stops)


def _checked(results: Iterable[Result], storage_stops: bool) -> Iterator[Result]:
    """``results``, unless one found the disk full or read-only: then StorageError (see ``results``)."""
    for result in results:
        if storage_stops and result.error is not None and result.error.kind == _STORAGE:
            raise StorageError(f"{result.error.message} (while saving {result.url})")
        yield result


def _remove_partials(out: str, tasks: Iterable[Task]) -> None:
    for task in tasks:
        try:
            part = join_within(out, task.name) + PART_SUFFIX
        except ValueError:
            continue
        if not partial.is_resumable(part):
            partial.discard(part)


def _discard_partial(out: str, task: Task) -> None:
    try:
        partial.discard(join_within(out, task.name) + PART_SUFFIX)
    except ValueError:
        pass
