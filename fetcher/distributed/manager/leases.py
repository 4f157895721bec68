"""The lease book: which URLs in flight are queued, which are leased, to whom, until when.

A plain data structure: no lock and no clock of its own (the Coordinator holds
the lock and passes ``now``), so every rule here is tested without threads.

- A URL in flight is one ``_Slot``: queued (``lease`` 0), or leased to one
  worker until ``expires``.
- ``reap`` puts expired leases back at the front of the queue. Heartbeats only
  move ``expires``; the expiry heap is corrected lazily when an entry comes up.
- ``accept`` takes the first completion of a slot; a success is final whoever
  made it, a failure counts only from the current lease.
- A success for a URL not in flight is kept (``remember``) and finishes the URL
  when it is offered: after a server restart, the new run may not have read it yet.
- ``adopt`` lets a worker keep the downloads it still runs under their old lease
  ids (ids embed the server's random epoch, so they never collide).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass

from fetcher.distributed.protocol import LeaseId
from fetcher.models import FetchTask as Task
from fetcher.models import Result

KEEP_LIMIT = 50_000  # remembered successes, and claims, for URLs not (yet) in flight


@dataclass(slots=True)
class _Slot:
    task: Task
    lease: int = 0
    worker: str = ""
    expires: float = 0.0


class LeaseBook:
    """Queued and leased tasks of one server run.

    Args:
        lease_timeout: seconds a lease lives without being renewed.
        first_lease_id: lease ids count up from here (the epoch, shifted).
    """

    def __init__(self, lease_timeout: float, first_lease_id: int) -> None:
        self.lease_timeout = lease_timeout
        self.queued = 0  # slots really waiting in the queue
        self.held: Counter[str] = Counter()  # leases per worker
        self._next_lease = first_lease_id
        self._slots: dict[str, _Slot] = {}
        self._queue: deque[str] = deque()  # URLs; entries whose slot is gone or leased are skipped
        self._leases: dict[int, str] = {}  # lease id -> URL
        self._expiry: list[tuple[float, int]] = []  # (expires, lease id) heap
        self._kept: dict[str, Result] = {}
        self._claims: dict[str, tuple[str, int, float]] = {}  # URL -> (worker, its lease id, until)

    @property
    def leased(self) -> int:
        return len(self._leases)

    def offer(self, task: Task, now: float) -> Result | None:
        """Queue a task; returns a remembered success for its URL instead, if there is one."""
        kept = self._kept.pop(task.url, None)
        if kept is not None:
            return kept
        slot = self._slots[task.url] = _Slot(task)
        claim = self._claims.pop(task.url, None) if self._claims else None
        if claim is not None and claim[2] >= now:
            self._lease(slot, claim[0], claim[1], now)
            return None
        self._queue.append(task.url)
        self.queued += 1
        return None

    def grant(self, worker_id: str, n: int, now: float) -> list[tuple[LeaseId, Task]]:
        """Lease up to ``n`` queued tasks to a worker, oldest first."""
        granted: list[tuple[LeaseId, Task]] = []
        while len(granted) < n and self._queue:
            slot = self._slots.get(self._queue.popleft())
            if slot is None or slot.lease:  # completed or leased since it was queued
                continue
            self.queued -= 1
            self._lease(slot, worker_id, self._next_lease, now)
            self._next_lease += 1
            granted.append((slot.lease, slot.task))
        return granted

    def renew(self, worker_id: str, lease_ids: list[int], now: float) -> list[int]:
        """Extend a worker's leases; returns those it no longer holds."""
        lost = []
        for lease_id in lease_ids:
            slot = self._leased(lease_id)
            if slot is None or slot.worker != worker_id:
                lost.append(lease_id)
            else:
                slot.expires = now + self.lease_timeout
        return lost

    def accept(self, lease_id: int, result: Result) -> Task | None:
        """The task this completion finishes, or None if it changes nothing (a late duplicate)."""
        slot = self._slots.get(result.url)
        if slot is None or (slot.lease != lease_id and not result.ok):
            return None
        if slot.lease:
            self._drop_lease(slot)
        else:
            self.queued -= 1
        del self._slots[result.url]
        return slot.task

    def in_flight(self, url: str) -> bool:
        return url in self._slots

    def remember(self, result: Result) -> None:
        """Keep a success for a URL not in flight, to finish it if it is offered later."""
        self._kept[result.url] = result
        if len(self._kept) > KEEP_LIMIT:
            del self._kept[next(iter(self._kept))]

    def release(self, lease_ids: list[int]) -> int:
        """Put leases back at the front of the queue; returns how many were still held."""
        returned = 0
        for lease_id in lease_ids:
            slot = self._leased(lease_id)
            if slot is not None:
                self._drop_lease(slot)
                self._requeue(slot)
                returned += 1
        return returned

    def adopt(self, worker_id: str, holding: list[tuple[int, str]], now: float) -> int:
        """Lease back to a worker what it still runs: now if queued, else when offered (see module doc)."""
        held = 0
        for lease_id, url in holding:
            slot = self._slots.get(url)
            if slot is None:
                self._claims[url] = (worker_id, lease_id, now + self.lease_timeout)
                if len(self._claims) > KEEP_LIMIT:
                    del self._claims[next(iter(self._claims))]
            elif slot.lease == lease_id or not slot.lease:
                if not slot.lease:
                    self.queued -= 1  # its queue entry is skipped from now on
                    self._lease(slot, worker_id, lease_id, now)
                slot.expires = now + self.lease_timeout
                held += 1
        return held

    def reap(self, now: float) -> Counter[str]:
        """Re-queue every expired lease; returns how many expired per worker."""
        expired: Counter[str] = Counter()
        while self._expiry and self._expiry[0][0] <= now:
            lease_id = heapq.heappop(self._expiry)[1]
            slot = self._leased(lease_id)
            if slot is None:
                continue
            if slot.expires > now:  # renewed since this entry was pushed
                heapq.heappush(self._expiry, (slot.expires, lease_id))
                continue
            expired[slot.worker] += 1
            self._drop_lease(slot)
            self._requeue(slot)
        return expired

    def _lease(self, slot: _Slot, worker_id: str, lease_id: int, now: float) -> None:
        slot.lease, slot.worker, slot.expires = lease_id, worker_id, now + self.lease_timeout
        self._leases[lease_id] = slot.task.url
        heapq.heappush(self._expiry, (slot.expires, lease_id))
        self.held[worker_id] += 1

    def _leased(self, lease_id: int) -> _Slot | None:
        url = self._leases.get(lease_id)
        slot = self._slots.get(url) if url is not None else None
        return slot if slot is not None and slot.lease == lease_id else None

    def _drop_lease(self, slot: _Slot) -> None:
        del self._leases[slot.lease]
        self.held[slot.worker] -= 1
        slot.lease, slot.worker = 0, ""

    def _requeue(self, slot: _Slot) -> None:
        self._queue.appendleft(slot.task.url)
        self.queued += 1
