"""The engine: input → scheduler → backend → collector, with bounded work in flight.

At most ``options.transport.window`` tasks are submitted and unfinished at any time, so a
list of millions of URLs is read as the downloads go, never all at once.

A run driven from an event loop (``local_backend``: the asyncio API, aio.py) never
blocks here: where the engine would wait (for the backend's results, for more
input, for a flush), it yields a ``Pause`` instead, and the loop's driver waits
without blocking and then asks for the next step, which looks without waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

from fetcher.backends import backend_class
from fetcher.backends.base import Backend, BackendFactory, SessionFactory
from fetcher.errors import Interrupted, StorageError
from fetcher.models import ErrorKind, FetchTask, Item, Result
from fetcher.options import Options
from fetcher.run.scheduler import Scheduler
from fetcher.download import durability
from fetcher.download.guards import CancelFlag
from fetcher.run.flusher import Flusher

MAX_WAIT_S = 0.25  # also the longest a cancel waits to be seen
_STORAGE = ErrorKind.STORAGE.value


@dataclass(frozen=True, slots=True)
class Pause:
    """Yielded by a pausing run where a blocking one would wait: wait up to ``seconds`` (less when
    the backend has results, new input or a cancel may be there), then ask for the next step.

    ``disk``: the next step works the disk (the journal opened or closed, syncs): a caller on an
    event loop runs it on a thread. It never touches the backend.
    """

    seconds: float
    disk: bool = False


@dataclass(frozen=True, slots=True)
class LoopBackend:
    """A ``backend_factory`` for a backend of this process that an event loop drives (the asyncio API):
    its files are flushed as any local backend's, and the run is pausing (see ``results``)."""

    make: BackendFactory


def results(items: Iterator[Item], options: Options,
            session_factory: SessionFactory | None = None,
            wait_for_more: Callable[[float], bool] | None = None,
            cancel: CancelFlag | None = None,
            backend_factory: BackendFactory | LoopBackend | None = None,
            storage_stops: bool = True, tick: Callable[[], None] | None = None) -> Generator[Result | Pause, None, None]:
    """Fetch every item and yield each final Result once, as downloads finish.

    ``items`` is pulled lazily, only when a worker is free. An item may be
    ``None``: "no input right now" (a crawl waiting for its own results). The
    input is then asked again after the next result; if nothing is in flight
    or waiting for a retry, the run is over, unless ``wait_for_more(timeout)``
    is given: it is then called to block until more input may be there, and
    returns False when no more will ever come (``Fetcher`` uses this).

    ``cancel``, checked at least every ``MAX_WAIT_S``, stops the run by raising
    Interrupted. ``backend_factory`` replaces ``options.transport.backend`` (``fetcher
    serve`` passes its RemoteBackend). A download that found the disk full or
    read-only (kind ``storage``) ends the run with StorageError while
    ``storage_stops`` (every later file would fail the same way; the URL stays
    unfinished for the next run); without it (a remote worker's disk) it is
    retried like any transient failure. On an exception (KeyboardInterrupt included), or when the
    consumer stops early, the backend is cancelled and told which tasks it never
    answered (``Backend.abandon``: their ``.part`` files go unless a later run can resume them).
    ``tick`` is called after every wait for the backend or for more input, at least every
    ``MAX_WAIT_S`` (the collector's live counts for ``fetcher status`` and the journal's commits
    catch up while no result comes).

    A ``LoopBackend`` makes the run pausing: it yields ``Pause`` where it would block, and
    never waits for the backend, the input or a flush thread itself (``wait_for_more`` and the
    backend's ``wait`` are then asked with 0). Yields no ``Pause`` without one.
    """
    scheduler = Scheduler(items, options)
    in_flight: dict[int, FetchTask] = {}
    backend, flusher = _backend_and_flusher(options, session_factory, backend_factory)
    try:
        with backend:
            caller = _Caller(wait_for_more, cancel, storage_stops, tick, isinstance(backend_factory, LoopBackend))
            yield from _drive(scheduler, backend, in_flight, options.transport.window, flusher, caller)
    except GeneratorExit:  # the consumer stopped: nobody to hand the held files to
        backend.abandon(in_flight.values())
        flusher.abandon()
        raise
    except BaseException:
        backend.abandon(in_flight.values())  # what its cancel could not reach: the backend decides
        try:  # downloads that finished before the interrupt are named and reported, as without a Flusher
            finished = flusher.ready(idle=True, block=True)
        except BaseException:
            flusher.abandon()
            raise
        yield from finished
        raise
    finally:
        scheduler.close()


def _backend_and_flusher(options: Options, session_factory: SessionFactory | None,
                         backend_factory: BackendFactory | LoopBackend | None) -> tuple[Backend, Flusher]:
    """A local backend's files reach the disk in the order --durability asks (download/durability.py);
    a backend_factory's (fetcher serve: remote workers) are not here to flush."""
    if backend_factory is not None and not isinstance(backend_factory, LoopBackend):
        return backend_factory(options, session_factory), Flusher(options, active=False)
    if isinstance(backend_factory, LoopBackend):
        make = backend_factory.make
    else:
        make = backend_class(options.transport.backend, options.transport.client)
    backend = make(durability.worker_options(options), session_factory)
    return backend, Flusher(options, inline=not isinstance(backend_factory, LoopBackend))


@dataclass(frozen=True)
class _Caller:
    """What the caller of ``results`` hands the loop: see its docstring (``pausing``: a ``LoopBackend``)."""

    wait_for_more: Callable[[float], bool] | None
    cancel: CancelFlag | None
    storage_stops: bool
    tick: Callable[[], None] | None
    pausing: bool = False


def _drive(scheduler: Scheduler, backend: Backend, in_flight: dict[int, FetchTask], window: int, flusher: Flusher,
           caller: _Caller) -> Iterator[Result | Pause]:
    # Over 40 lines: one loop that submits, waits and hands on; the pausing variants sit beside
    # the blocking calls they replace, so both drivers read as the same loop.
    wait_for_more, cancel, storage_stops, tick = caller.wait_for_more, caller.cancel, caller.storage_stops, caller.tick
    pausing = caller.pausing
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
            flushed = flusher.ready(idle=True)
            if flushed:
                yield from _checked(flushed, storage_stops)
                continue
            if flusher.holding:  # pausing: a flush thread still has the last files
                yield Pause(flusher.seconds_until_due() or 0.0)
                continue
            if scheduler.done:
                return
            # The input said "nothing right now" just now (the refill above asked it), and
            # nothing in flight can change that: the run is over, unless more may come.
            if wait_for_more is None:
                return
            if pausing:
                yield Pause(MAX_WAIT_S)
            if not wait_for_more(0.0 if pausing else MAX_WAIT_S):
                return
            if tick is not None:  # an idle Fetcher: its last results are committed while it waits
                tick()
            continue
        # At capacity, nothing due can be submitted before a result comes back: wait for one,
        # rather than ask the backend again and again with a timeout of 0 (issue 19).
        retry_in = scheduler.seconds_until_next() if len(in_flight) < limit else None
        timeout = min(t for t in (retry_in, flusher.seconds_until_due(), MAX_WAIT_S) if t is not None)
        if pausing:
            yield Pause(timeout)
            timeout = 0.0
        for result in _checked(backend.wait(timeout), storage_stops):
            task = in_flight.pop(result.index)
            final = scheduler.settle(task, result)
            if final is not None:
                final = flusher.add(final, task)  # a file not yet on the disk waits for its batch
                if final is not None:
                    yield final
        yield from _checked(flusher.ready(idle=not in_flight), storage_stops)
        if tick is not None:
            tick()


def _checked(results: Iterable[Result], storage_stops: bool) -> Iterator[Result]:
    """``results``, unless one found the disk full or read-only: then StorageError (see ``results``)."""
    for result in results:
        if storage_stops and result.error is not None and result.error.kind == _STORAGE:
            raise StorageError(f"{result.error.message} (while saving {result.url})")
        yield result
