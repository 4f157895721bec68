"""What runs next: new tasks from the input, and retries whose time has come.

All policy lives here, in the coordinating process: backends only execute. A
transient failure does not sleep in a worker slot; it comes back here and is
scheduled again after an exponential, jittered backoff (or the server's
Retry-After, when longer), while other tasks keep flowing.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from fetcher.models import Result, Task

if TYPE_CHECKING:
    from fetcher.options import Options


class Scheduler:
    """Feeds tasks from a lazy input and re-queues retryable failures.

    Args:
        items: Tasks, or already-failed Results for bad input lines, in order.
        options: ``retries``, ``backoff`` and ``backoff_cap``.
        clock: monotonic seconds; injectable for tests.
        jitter: returns a float in [0, 1); injectable for tests.
    """

    def __init__(self, items: Iterator[Task | Result], options: Options,
                 clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random) -> None:
        self._items = items
        self._options = options
        self._clock = clock
        self._jitter = jitter
        self._retries: list[tuple[float, int, Task]] = []  # (due, index, task) heap
        self._source_done = False

    @property
    def done(self) -> bool:
        """True once the input is exhausted and no retry is waiting."""
        return self._source_done and not self._retries

    def next_ready(self) -> Task | Result | None:
        """A due retry first, else the next input item; None if nothing is ready now."""
        if self._retries and self._retries[0][0] <= self._clock():
            return heapq.heappop(self._retries)[2]
        if self._source_done:
            return None
        item = next(self._items, None)
        if item is None:
            self._source_done = True
        return item

    def seconds_until_next(self) -> float | None:
        """How long until a waiting retry is due (None if none waits)."""
        if not self._retries:
            return None
        return max(0.0, self._retries[0][0] - self._clock())

    def settle(self, task: Task, result: Result) -> Result | None:
        """Decide a finished attempt: return the final Result, or None if retried."""
        if not result.retryable or task.attempt > self._options.retries:
            return result
        due = self._clock() + self.backoff_delay(task.attempt, result.retry_after)
        heapq.heappush(self._retries, (due, task.index, replace(task, attempt=task.attempt + 1)))
        return None

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter for the retry after ``attempt``.

        The delay is drawn from [1/2, 1] of ``backoff * 2**(attempt-1)`` (capped),
        so workers that failed together do not retry together. A server's
        Retry-After, capped the same way, is a floor.
        """
        cap = self._options.backoff_cap
        base = min(cap, self._options.backoff * 2 ** (attempt - 1))
        delay = base * (0.5 + self._jitter() / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay
