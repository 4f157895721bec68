"""One run (``runner.run_pausing``) driven from a task of the running asyncio loop, which it never blocks.

The engine is the same generator every other path runs; it runs pausing: where a
blocking run would wait (for the backend, for more input, for a flush thread),
it yields ``engine.Pause`` and this driver awaits, until ``wake()`` (results
ended, input came, a cancel) or the pause's timeout, then asks for the next step.
The backend is libcurl's multi on this loop (backends/asyncio_curl.py), whose
callbacks call ``wake``.

What would block the loop runs elsewhere: the run's setup and teardown (the
folder's lock, the journal opened and closed, the syncs of durability.py's
begin_run) on the loop's default executor, the flushes of finished files on the
Flusher's own thread. The journal's commits stay here, batched (two or so a second).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from fetcher.backends.asyncio_curl import LoopCurlBackend
from fetcher.run.engine import Pause
from fetcher.run.runner import run_pausing

if TYPE_CHECKING:
    from fetcher.download.guards import CancelFlag
    from fetcher.models import FetchTask, Item, Result
    from fetcher.run.runner import RunSpec

_Steps = Generator["Result | Pause", None, None]
_END = Pause(-1.0)  # what _advance returns once the run is over (a StopIteration cannot cross a Future)


class LoopDriver:
    """Runs ``spec`` on the running loop; ``deliver`` gets each final Result, on the loop's thread."""

    def __init__(self, spec: RunSpec, deliver: Callable[[Result], None]) -> None:
        self._spec = spec
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Something may have changed (results ended, input came, a cancel): take the next step soon."""
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, items: Iterator[Item], wait_for_more: Callable[[float], bool], cancel: CancelFlag,
                  started: Callable[[], None]) -> None:
        """The whole run; ``started()`` once its setup succeeded (before the first request).

        Raises what the run raises: ``Interrupted`` once ``cancel`` is seen, ConfigError from the
        setup (the folder in use), StorageError (the disk filled up).
        """
        backend = partial(LoopCurlBackend, loop=self._loop, wake=self.wake)
        steps = run_pausing(self._spec, items, backend, wait_for_more, cancel)
        busy: asyncio.Future[Result | Pause] | None = None
        try:
            busy = self._loop.run_in_executor(None, _advance, steps)  # the setup: the disk
            step = await busy
            busy = None
            started()
            while step is not _END:
                if isinstance(step, Pause):
                    if step.disk:  # the teardown: the disk again
                        busy = self._loop.run_in_executor(None, _advance, steps)
                        step = await busy
                        busy = None
                        continue
                    await self._pause(step.seconds)
                else:
                    self._deliver(step)
                step = next(steps, _END)
        finally:
            if busy is not None and not busy.done():  # cancelled while a thread runs a step: close after it
                busy.add_done_callback(lambda _: steps.close())
            else:
                steps.close()  # the run stopped early (the task cancelled): its cleanup, here

    async def _pause(self, seconds: float) -> None:
        if self._woken or seconds <= 0:  # something is there already: only let the loop run once
            self._woken = False
            await asyncio.sleep(0)
            return
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._woken = False


def _advance(steps: _Steps) -> Result | Pause:
    return next(steps, _END)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_Waiter = tuple["asyncio.Future[Result]", Any, bool]  # a submission: its future, its meta, kept for results()


class Asked:
    """What was asked for and not answered yet: the run's input (``feed``) and the futures its
    Results resolve. A URL asked for again while in flight shares the one download.

    Args:
        on_result: called with each Result, once per submission, before its future resolves.
    """

    def __init__(self, on_result: Callable[[Result], None] | None) -> None:
        self._on_result = on_result
        self._queue: deque[FetchTask | Result] = deque()  # not yet read by the engine
        self._waiting: dict[str, list[_Waiter]] = {}
        self.kept: deque[Result] = deque()  # Results of kept submissions, for AsyncFetcher.results()
        self.kept_due = 0  # kept submissions not resolved yet
        self.shared = 0  # submissions of a URL already in flight: the summary's duplicates
        self.closed = False  # no more input: the run ends once what was asked is done
        self.changed: asyncio.Future[None] | None = None  # set when ``kept`` grows or the run ends

    def ask(self, work: FetchTask | Result, meta: Any, keep: bool) -> tuple[asyncio.Future[Result], bool]:
        """A future of ``work``'s Result, and whether the run has new input (not a shared URL)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.kept_due += keep
        waiters = self._waiting.get(work.url)
        if waiters is not None:
            self.shared += 1
            waiters.append((future, meta, keep))
            return future, False
        self._waiting[work.url] = [(future, meta, keep)]
        self._queue.append(work)
        return future, True

    def feed(self) -> Iterator[Item]:
        """The run's input: what was asked, ``None`` while nothing is, until closed."""
        while True:
            if self._queue:
                yield self._queue.popleft()
            elif self.closed:
                return
            else:
                yield None

    def wait_for_more(self, _timeout: float) -> bool:
        """More input may come (the engine asks with 0: the driver did the waiting)."""
        return bool(self._queue) or not self.closed

    def resolve(self, result: Result) -> None:
        for future, meta, keep in self._waiting.pop(result.url, []):
            delivered = replace(result, meta=meta) if meta is not None else result
            if self._on_result is not None:
                self._on_result(delivered)
            if keep:
                self.kept_due -= 1
                self.kept.append(delivered)
                self.signal()
            if not future.done():  # a cancelled await leaves a cancelled future
                future.set_result(delivered)

    def abandon(self, error: BaseException | None) -> None:
        """The run ended: every future still waiting fails with ``error``, or is cancelled."""
        waiters = [w for ws in self._waiting.values() for w in ws]
        self._waiting.clear()
        self._queue.clear()
        self.closed = True
        for future, _, _ in waiters:
            if future.done():
                continue
            if error is not None and not isinstance(error, asyncio.CancelledError):
                future.set_exception(error)
                future.exception()  # retrieved: a future nobody awaits logs no warning
            else:
                future.cancel()
        self.kept_due = 0
        self.signal()

    def signal(self) -> None:
        if self.changed is not None and not self.changed.done():
            self.changed.set_result(None)
