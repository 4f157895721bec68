"""One exponential backoff with jitter, for every "wait longer after each failure" of fetcher.

Used by the scheduler (a URL's retries), a worker's reconnects to its broker, ``serve``'s
reconnects to Redis and a worker's idle polling, so that the formula, its cap and its jitter
are written once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``first * 2**n`` seconds after the ``n``-th failure in a row (n from 0), at most ``cap``.

    The delay is drawn from ``[1 - jitter, 1]`` of that, so peers that failed together do not
    come back together (``jitter=0``: no randomness). ``2**n`` stops growing at
    ``max_doublings``: the cap binds long before, and the number stays a float.
    """

    first: float
    cap: float
    jitter: float = 0.5
    max_doublings: int = 60

    def base(self, failures: int) -> float:
        """The delay before jitter after ``failures`` failures in a row (0: the first delay)."""
        return min(self.cap, self.first * 2.0 ** min(max(failures, 0), self.max_doublings))

    def delay(self, failures: int, draw: Callable[[], float] = random.random) -> float:
        """The jittered delay; ``draw`` returns a float in [0, 1) (injectable for tests)."""
        return self.base(failures) * (1 - self.jitter + self.jitter * draw())
