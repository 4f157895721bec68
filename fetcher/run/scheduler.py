"""What runs next: new tasks from the input, retries whose time has come, fairly across hosts.

All policy lives here, in the coordinating process: backends only execute.
- A transient failure does not sleep in a worker slot; it comes back here and
  is scheduled again after an exponential, jittered backoff (or the server's
  Retry-After, when longer), while other tasks keep flowing.
- A task whose host is at its ``--per-host`` cap, inside its ``--delay`` gap or
  paused by a Retry-After waits in that host's queue ("parked") while the input
  is read ahead for other hosts, so one slow host cannot starve the rest. At
  most ``max_parked`` tasks wait this way, which bounds memory.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from fetcher.backoff import Backoff
from fetcher.run.hosts import HostLimits, host_key
from fetcher.models import FetchTask, Item, Result
from fetcher.run.gates import Gate, Gates, from_options

if TYPE_CHECKING:
    from fetcher.options import Options

DEFAULT_MAX_PARKED = 10_000
PAUSING_STATUSES = frozenset({429, 503})
FORGET_EVERY = 4096
GATE_POLL_S = 0.02  # how often a run with nothing else to do looks for DNS and robots.txt answers


class Scheduler:
    """Feeds tasks from a lazy input, holds per-host limits and re-queues retryable failures.

    Args:
        items: Tasks, or already-failed Results for bad input lines, in order;
            ``None`` means "nothing right now, ask again later" (see ``idle``).
        options: ``retries``, ``backoff``, ``backoff_cap``, ``max_retry_after``,
            ``per_host`` and ``delay``.
        clock: monotonic seconds; injectable for tests.
        jitter: returns a float in [0, 1); injectable for tests.
        max_parked: most tasks held back for busy hosts at once.
    """

    def __init__(self, items: Iterator[Item], options: Options,
                 clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random,
                 max_parked: int = DEFAULT_MAX_PARKED, gates: list[Gate] | None = None) -> None:
        self._items = items
        self._options = options
        self._clock = clock
        self._jitter = jitter
        self._backoff = Backoff(options.rules.backoff, options.rules.backoff_cap)
        self._max_parked = max_parked
        self._limits = HostLimits(options.politeness.per_host, options.politeness.delay)
        self._retries: list[tuple[float, int, FetchTask]] = []  # (due, index, task) heap
        self._parked: dict[str, deque[FetchTask]] = {}
        self._parked_count = 0
        self._runnable: deque[str] = deque()  # hosts with parked tasks that may be free
        self._timed: list[tuple[float, str]] = []  # (when, host) heap: hosts waiting on a gap or pause
        self._source_done = False
        self._starved = False  # the input's last answer was None: "nothing right now"
        self._settled = 0
        # DNS and --robots (gates.py): a host whose answer is on its way waits parked, not runnable
        self._gates = Gates(from_options(options) if gates is None else gates)

    @property
    def done(self) -> bool:
        """True once the input is exhausted and nothing waits (retries, parked tasks)."""
        return self._source_done and self._nothing_waits

    @property
    def idle(self) -> bool:
        """True when the input has nothing right now (exhausted, or it said ``None``) and nothing waits."""
        return (self._source_done or self._starved) and self._nothing_waits

    @property
    def _nothing_waits(self) -> bool:
        return not self._retries and not self._parked_count

    def next_ready(self) -> Item:
        """The next task allowed to start now, or a bad-line Result; None if none is ready.

        The returned task holds a slot of its host until ``settle`` is called with it.
        """
        now = self._clock()
        while self._retries and self._retries[0][0] <= now:
            self._park(heapq.heappop(self._retries)[2], front=True)
        while self._timed and self._timed[0][0] <= now:
            self._runnable.append(heapq.heappop(self._timed)[1])
        if self._gates:
            self._runnable.extend(h for h in self._gates.arrived(self._limits, self._options.rules.max_retry_after)
                                  if h in self._parked)
        task = self._next_parked(now)
        if task is not None:
            return task
        return self._next_from_input(now)

    def _next_parked(self, now: float) -> FetchTask | Result | None:
        while self._runnable:
            host = self._runnable.popleft()
            queue = self._parked.get(host)
            if not queue:
                continue
            if self._gates:
                admitted = self._gates.admit(queue[0], host)
                if admitted is None:  # made runnable again when the answer comes
                    continue
                if isinstance(admitted, Result):
                    return self._refused(host, queue, admitted)
                queue[0] = admitted
            blocked = self._limits.blocked_until(host, now)
            if blocked is not None:
                self._wait(host, blocked)
                continue
            task = queue.popleft()
            self._parked_count -= 1
            if queue:
                self._runnable.append(host)  # round robin across hosts
            else:
                del self._parked[host]
            self._limits.acquire(host, now)
            return task
        return None

    def _next_from_input(self, now: float) -> Item:
        self._starved = False
        while not self._source_done and self._parked_count < self._max_parked:
            try:
                item = next(self._items)
            except StopIteration:
                self._source_done = True
                return None
            if item is None:
                self._starved = True
                return None
            if isinstance(item, Result):
                return item
            host = host_key(item.url)
            if host in self._parked:
                self._parked[host].append(item)
                self._parked_count += 1
                continue
            if self._gates:
                admitted = self._gates.admit(item, host)
                if admitted is None:
                    self._parked[host] = deque([item])
                    self._parked_count += 1
                    continue
                if isinstance(admitted, Result):
                    return admitted
                item = admitted
            blocked = self._limits.blocked_until(host, now)
            if blocked is None:
                self._limits.acquire(host, now)
                return item
            self._parked[host] = deque([item])
            self._parked_count += 1
            self._wait(host, blocked)
        return None

    def _refused(self, host: str, queue: deque[FetchTask], refusal: Result) -> Result:
        """``refusal``, the Result of ``host``'s first parked task, which a gate turned away."""
        queue.popleft()
        self._parked_count -= 1
        if queue:
            self._runnable.append(host)
        else:
            del self._parked[host]
        return refusal

    def close(self) -> None:
        """Stop the gates' lookups and robots.txt requests (the run is over or interrupted)."""
        self._gates.close()

    def _park(self, task: FetchTask, front: bool = False) -> None:
        host = host_key(task.url)
        queue = self._parked.get(host)
        if queue is None:
            self._parked[host] = deque([task])
            self._runnable.append(host)
        elif front:
            queue.appendleft(task)
        else:
            queue.append(task)
        self._parked_count += 1

    def _wait(self, host: str, until: float) -> None:
        # At its cap (inf), a host is made runnable again by settle(); otherwise by time.
        if not math.isinf(until):
            heapq.heappush(self._timed, (until, host))

    def seconds_until_next(self) -> float | None:
        """How long until a waiting retry or host becomes ready (None if nothing waits on time)."""
        times = [heap[0][0] for heap in (self._retries, self._timed) if heap]
        if self._gates and self._gates.asking:
            times.append(self._clock() + GATE_POLL_S)
        if not times:
            return None
        return max(0.0, min(times) - self._clock())

    def settle(self, task: FetchTask, result: Result) -> Result | None:
        """Decide a finished attempt: return the final Result, or None if it will be retried.

        Frees the task's host slot; a 429 or 503 with Retry-After pauses the host
        for every worker.
        """
        now = self._clock()
        host = host_key(task.url)
        self._limits.release(host, now, None if result.after_head_s is None else now - result.after_head_s)
        if result.retry_after is not None and result.http_status in PAUSING_STATUSES:
            self._limits.pause(host, now + min(result.retry_after, self._options.rules.max_retry_after))
        if host in self._parked:
            self._runnable.append(host)
        self._settled += 1
        if self._settled % FORGET_EVERY == 0:
            self._limits.forget_idle(now)
        if not self._options.rules.will_retry(task.attempt, result.retryable):
            return result
        due = now + self.backoff_delay(task.attempt, result.retry_after)
        heapq.heappush(self._retries, (due, task.index, replace(task, attempt=task.attempt + 1)))
        return None

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter for the retry after ``attempt``, or the server's word.

        The delay is drawn from [1/2, 1] of ``backoff * 2**(attempt-1)`` (capped
        by ``backoff_cap``), so workers that failed together do not retry
        together. A server's Retry-After (above 0), capped by ``max_retry_after``, is
        the delay itself, as curl --retry takes it: the server said when, and a 429 or
        503 also pauses its host that long (``settle``), so no request comes sooner.
        Growing our own guess on top only lengthened a run's tail: the third 429 of a
        URL waited 1-2 s where ``Retry-After: 1`` asked for 1 (issue 27, benchmarks/wan.py).
        A Retry-After beyond the cap is not the server's word any more: the retry then
        waits the cap or our backoff, whichever is longer, so a small cap (even 0) never
        makes a throttled host's retries come sooner than an unthrottled one's.
        """
        backoff = self._backoff.delay(attempt - 1, self._jitter)
        if retry_after is None or retry_after <= 0:
            return backoff
        cap = self._options.rules.max_retry_after
        return retry_after if retry_after <= cap else max(backoff, cap)
