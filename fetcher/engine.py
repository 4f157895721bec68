"""The engine: input → scheduler → backend → collector, with bounded work in flight.

At most ``options.window`` tasks are submitted and unfinished at any time, so a
list of millions of URLs is read as the downloads go, never all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fetcher import partial
from fetcher.backends import get_backend
from fetcher.backends.base import Backend, BackendFactory, SessionFactory
from fetcher.collector import Collector
from fetcher.models import Result, Status, Task
from fetcher.naming import PART_SUFFIX, join_within
from fetcher.options import Options
from fetcher.scheduler import Scheduler

MAX_WAIT_S = 1.0


def run(items: Iterator[Task | Result], options: Options, collector: Collector,
        session_factory: SessionFactory | None = None, backend_factory: BackendFactory | None = None) -> None:
    """Fetch every item, reporting each final Result to ``collector`` exactly once.

    ``backend_factory`` replaces ``options.backend`` (``fetcher serve`` passes its RemoteBackend).

    Returns when every item is final. On an exception (KeyboardInterrupt
    included) the backend is cancelled, the ``.part`` files of unfinished
    downloads are removed unless a later run can resume them, and the
    exception propagates; what finished has already reached the collector.
    """
    backend_class = backend_factory or get_backend(options.backend)
    scheduler = Scheduler(items, options)
    in_flight: dict[int, Task] = {}
    try:
        with backend_class(options, session_factory) as backend:
            _drive(scheduler, backend, in_flight, collector, options.window, options.out)
    except BaseException:
        _remove_partials(options.out, in_flight.values())
        raise


def _drive(scheduler: Scheduler, backend: Backend, in_flight: dict[int, Task],
           collector: Collector, window: int, out: str) -> None:
    while True:
        limit = backend.capacity(window)
        while len(in_flight) < limit:
            item = scheduler.next_ready()
            if item is None:
                break
            if isinstance(item, Result):  # a bad input line: final already
                collector.record(item)
                continue
            in_flight[item.index] = item
            backend.submit(item)
        if not in_flight and scheduler.done:
            return
        retry_in = scheduler.seconds_until_next()
        timeout = MAX_WAIT_S if retry_in is None else min(retry_in, MAX_WAIT_S)
        for result in backend.wait(timeout):
            task = in_flight.pop(result.index)
            final = scheduler.settle(task, result)
            if final is None:
                continue
            if final.status is Status.FAILED:
                _discard_partial(out, task)  # kept for a retry that will not come
            collector.record(final)


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
