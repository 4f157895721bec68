"""The engine: input → scheduler → backend → collector, with bounded work in flight.

At most ``options.window`` tasks are submitted and unfinished at any time, so a
list of millions of URLs is read as the downloads go, never all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator

from fetcher.backends import backend_class
from fetcher.backends.base import Backend, BackendFactory, SessionFactory
from fetcher.errors import Interrupted, StorageError
from fetcher.models import ErrorKind, FetchTask, Item, Result
from fetcher.options import Options
from fetcher.run.scheduler import Scheduler
from fetcher.download.guards import CancelFlag

MAX_WAIT_S = 0.25  # also the longest a cancel waits to be seen
_STORAGE = ErrorKind.STORAGE.value


def results(items: Iterator[Item], options: Options,
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
    consumer stops early, the backend is cancelled and told which tasks it never
    answered (``Backend.abandon``: their ``.part`` files go unless a later run can resume them).
    """
    make_backend = backend_factory or backend_class(options.backend, options.client)
    scheduler = Scheduler(items, options)
    in_flight: dict[int, FetchTask] = {}
    backend = make_backend(options, session_factory)
    try:
        with backend:
            yield from _drive(scheduler, backend, in_flight, options.window, wait_for_more, cancel, storage_stops)
    except BaseException:
        backend.abandon(in_flight.values())  # what its cancel could not reach: the backend decides
        raise


def _drive(scheduler: Scheduler, backend: Backend, in_flight: dict[int, FetchTask], window: int,
           wait_for_more: Callable[[float], bool] | None, cancel: CancelFlag | None,
           storage_stops: bool = True) -> Iterator[Result]:
    while True:
        if cancel is not None and cancel.is_set():
            raise Interrupted("cancelled")
        limit = backend.capacity(window)
        while len(in_flight) < limit:
            item = scheduler.next_ready()
            if item is None:
                break
            if isinstance(item, Result):  # a bad input line: final already
                yield item
                continue
            in_flight[item.index] = item
            backend.submit(item)
        if not in_flight and scheduler.idle:
            if scheduler.done:
                return
            # The input said "nothing right now" just now (the refill above asked it), and
            # nothing in flight can change that: the run is over, unless more may come.
            if wait_for_more is None or not wait_for_more(MAX_WAIT_S):
                return
            continue
        retry_in = scheduler.seconds_until_next()
        timeout = MAX_WAIT_S if retry_in is None else min(retry_in, MAX_WAIT_S)
        for result in backend.wait(timeout):
            if storage_stops and result.error is not None and result.error.kind == _STORAGE:
                raise StorageError(f"{result.error.message} (while saving {result.url})")
            task = in_flight.pop(result.index)
            final = scheduler.settle(task, result)
            if final is not None:
                yield final
