"""The engine: input → scheduler → backend → collector, with bounded work in flight.

At most ``options.window`` tasks are submitted and unfinished at any time, so a
list of millions of URLs is read as the downloads go, never all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing

from fetcher import partial
from fetcher.backends import get_backend
from fetcher.backends.base import Backend, BackendFactory, SessionFactory
from fetcher.collector import Collector
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
    backend_class = backend_factory or get_backend(options.backend)
    scheduler = Scheduler(items, options)
    in_flight: dict[int, Task] = {}
    try:
        with backend_class(options, session_factory) as backend:
            yield from _drive(scheduler, backend, in_flight, options.window, options.out, wait_for_more, cancel,
                              storage_stops)
    except BaseException:
        _remove_partials(options.out, in_flight.values())
        raise


def _drive(scheduler: Scheduler, backend: Backend, in_flight: dict[int, Task], window: int, out: str,
           wait_for_more: Callable[[float], bool] | None, cancel: CancelFlag | None,
           storage_stops: bool = True) -> Iterator[Result]:
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
        retry_in = scheduler.seconds_until_next()
        timeout = MAX_WAIT_S if retry_in is None else min(retry_in, MAX_WAIT_S)
        for result in backend.wait(timeout):
            if storage_stops and result.error is not None and result.error.kind == _STORAGE:
                raise StorageError(f"{result.error.message} (while saving {result.url})")
            task = in_flight.pop(result.index)
            final = scheduler.settle(task, result)
            if final is None:
                continue
            if final.status is Status.FAILED:
                _discard_partial(out, task)  # kept for a retry that will not come
            asked_again = False
            yield final


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
