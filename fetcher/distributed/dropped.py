"""Messages a broker dropped: counted, and logged without flooding the log.

Anyone who can write to the run's Redis keys (or who holds the manager's key)
can send a broker anything. Whatever does not decode to one of our messages is
dropped by the reader, never raised: a crash or a stall of ``serve`` or of a
worker would stop the run. Each drop is counted (the summary says how many) and
logged, the first few in full, then at most one line per ``interval`` seconds,
so a flood of garbage cannot fill a disk with log lines.
"""

from __future__ import annotations

import logging
import threading
import time


class Dropped:
    """A count of dropped messages, with a rate-limited warning per drop."""

    def __init__(self, log: logging.Logger, who: str, burst: int = 5, interval: float = 10.0) -> None:
        self.count = 0
        self._log, self._who = log, who
        self._burst, self._interval = burst, interval
        self._next_at = 0.0
        self._unlogged = 0
        self._lock = threading.Lock()  # the manager's connections each have a thread

    def __call__(self, where: str, why: object) -> None:
        """Count one dropped message and log it, unless the log is being flooded."""
        with self._lock:
            self.count += 1
            now = time.monotonic()
            if self.count > self._burst and now < self._next_at:
                self._unlogged += 1
                return
            unlogged, self._unlogged = self._unlogged, 0
            if self.count > self._burst:
                self._next_at = now + self._interval
        more = f" ({unlogged} more dropped since the last line)" if unlogged else ""
        self._log.warning("%s: dropped %s: %s%s", self._who, where, _short(why), more)


def _short(why: object) -> str:
    text = str(why)
    return text if len(text) <= 200 else text[:200] + "..."
