"""A worker's finished results on their way to the server, sent in batches, at least once.

Results wait here until the server acknowledges them, however long it is away.
Successes it acknowledged recently are kept a while longer: a server killed
outright loses its journal's last uncommitted batch (up to half a second of
results), so they are sent again to the server that replaces it, which
finishes those URLs without fetching them again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from fetcher.distributed.protocol import LeaseId
from fetcher.models import Result

BATCH = 1000  # results per complete() call
RESEND_RECENT_S, RESEND_RECENT_MAX = 30.0, 20_000


class Outbox:
    """Results not yet acknowledged, oldest first.

    Args:
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: list[tuple[LeaseId, Result]] = []
        self.since = 0.0  # when the oldest pending result arrived
        self._acked: deque[tuple[float, LeaseId, Result]] = deque(maxlen=RESEND_RECENT_MAX)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, lease_id: LeaseId, result: Result) -> None:
        if not self._pending:
            self.since = self._clock()
        self._pending.append((lease_id, result))

    def flush(self, send: Callable[[list[tuple[LeaseId, Result]]], object]) -> None:
        """Send everything in batches; what ``send`` raised on stays for the next flush."""
        while self._pending:
            batch = self._pending[:BATCH]
            send(batch)
            del self._pending[:len(batch)]
            now = self._clock()
            self._acked.extend((now, lease_id, result) for lease_id, result in batch if result.ok)

    def resend_recent(self) -> int:
        """Queue again the successes acknowledged in the last ``RESEND_RECENT_S``; returns how many."""
        since = self._clock() - RESEND_RECENT_S
        recent = [(lease_id, result) for when, lease_id, result in self._acked if when >= since]
        self._acked.clear()
        if recent and not self._pending:
            self.since = self._clock()
        self._pending[:0] = recent
        return len(recent)
