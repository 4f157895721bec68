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
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import TYPE_CHECKING

from fetcher.backends.asyncio_curl import LoopCurlBackend
from fetcher.run.engine import Pause
from fetcher.run.runner import run_pausing

if TYPE_CHECKING:
    from fetcher.download.guards import CancelFlag
    from fetcher.models import Item, Result
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
