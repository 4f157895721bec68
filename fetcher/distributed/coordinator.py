"""The Coordinator: the server's book of queued and leased URLs.

It has two faces behind one lock:

- the remote methods of ``protocol.EXPOSED``, called by workers through the
  manager server (one thread per connection). None of them ever blocks: each
  takes the lock, moves a batch of entries between dicts, and returns;
- the engine methods (``offer``, ``collect``, ``room``, ``finish``), called by
  the RemoteBackend in the engine's thread.

A URL in flight is one ``_Slot``: queued, or leased to one worker until its
lease expires. Expired leases go back to the front of the queue (checked
lazily on every ``lease`` and ``collect``: the engine calls ``collect`` at
least once a second). The first completion of a slot wins; a completion for a
URL that is no longer in flight changes nothing.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fetcher import __version__
from fetcher.distributed.protocol import (PROTOCOL, Finished, Grant, Refusal, Wait, Welcome,
                                          WorkerInfo)
from fetcher.models import Result, Status, Task
from fetcher.options import Options

RUNNING, DONE, STOPPED = "running", "done", "stopped"
MAX_GRANT = 5_000  # tasks per lease reply: bounds one message to a few hundred KiB
EARLY_LIMIT = 50_000  # successful results kept for URLs not (yet) in flight
POLL_HINT_S = 0.05  # "ask again in" when the queue is empty
MAX_HEARTBEAT_S = 2.0


@dataclass(slots=True)
class _Slot:
    """One URL in flight: queued (``lease`` 0) or leased to ``worker`` until ``expires``."""

    task: Task
    lease: int = 0
    worker: str = ""
    expires: float = 0.0


@dataclass(slots=True)
class _Worker:
    info: WorkerInfo
    seen: float
    free: int = 0  # slots it has free: declared at each lease, grown by what it completes since
    held: int = 0  # leases it holds now
    done: int = 0  # completions accepted from it
    told_end: bool = False
    left: bool = False


class Coordinator:
    """Leases the tasks the engine offers to workers and hands their results back.

    Args:
        options: the run's options; sent to workers in ``Welcome`` (their fetching rules).
        run_id: stays the same across restarts of the server on one output folder.
        epoch: differs on every start; lease ids are made from it so they never repeat.
        lease_timeout: seconds a lease lives without a heartbeat.
        total: URLs in the input if known (for ``stats``).
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, options: Options, run_id: str, epoch: int, lease_timeout: float = 60.0,
                 total: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.run_id = run_id
        self.epoch = epoch
        self.lease_timeout = lease_timeout
        # Often enough that a busy worker hears "the run is over" within seconds; a heartbeat
        # is one small call. A worker calls at least this often, or four times a second when idle.
        self.heartbeat_s = min(lease_timeout / 4, MAX_HEARTBEAT_S)
        self.live_s = max(3 * self.heartbeat_s, 3.0)
        self.total = total
        self._clock = clock
        self._cond = threading.Condition()
        self._slots: dict[str, _Slot] = {}
        self._queue: deque[str] = deque()  # URLs; entries whose slot is gone or leased are skipped
        self._queued = 0  # slots really waiting in the queue
        self._leases: dict[int, str] = {}  # lease id -> URL
        self._expiry: list[tuple[float, int]] = []  # heap of (expires, lease id), renewed lazily
        self._next_lease = epoch << 32
        self._finished: list[Result] = []  # accepted, not yet collected by the engine
        self._early: dict[str, Result] = {}
        self._claims: dict[str, tuple[str, int, float]] = {}  # URL -> (worker, its lease id, until)
        self._workers: dict[str, _Worker] = {}
        self._state = RUNNING
        self._counts: Counter[str] = Counter()
        self._final: Counter[str] = Counter()
        self._events: list[str] = []

    # -- remote methods (manager threads) ---------------------------------------------------

    def hello(self, protocol: int, version: str, info: WorkerInfo) -> Welcome | Refusal:
        if protocol != PROTOCOL or version != __version__:
            return Refusal(f"the server runs fetcher {__version__} (protocol {PROTOCOL}) and this worker "
                           f"fetcher {version} (protocol {protocol}): install the same version on both")
        with self._cond:
            worker = self._workers.get(info.id)
            if worker is None:
                self._workers[info.id] = _Worker(info, self._clock())
                self._events.append(f"worker {info.id} joined ({info.backend}, pool {info.pool}, "
                                    f"files in {info.host}:{info.out})")
            else:
                worker.info, worker.seen, worker.left = info, self._clock(), False
        return Welcome(self.run_id, self.epoch, self.options, self.lease_timeout, self.heartbeat_s)

    def lease(self, worker_id: str, n: int) -> Grant | Wait | Finished:
        with self._cond:
            now = self._clock()
            worker = self._touch(worker_id, now)
            if self._state != RUNNING:
                worker.told_end = True
                return Finished(self._state == STOPPED)
            self._reap(now)
            granted = self._grant(worker, max(0, min(n, MAX_GRANT)), now)
            worker.free = max(0, n - len(granted))
            if worker.free:
                self._cond.notify_all()  # room for more: wake the engine to submit
        return Grant(granted, self.lease_timeout) if granted else Wait(POLL_HINT_S)

    def heartbeat(self, worker_id: str, lease_ids: list[int]) -> list[int] | Finished:
        """Renew leases; returns those the worker no longer holds (expired, or completed by another)."""
        with self._cond:
            now = self._clock()
            worker = self._touch(worker_id, now)
            if self._state != RUNNING:
                worker.told_end = True
                return Finished(self._state == STOPPED)
            lost = []
            for lease_id in lease_ids:
                slot = self._leased(lease_id)
                if slot is None or slot.worker != worker_id:
                    lost.append(lease_id)
                else:
                    slot.expires = now + self.lease_timeout
            return lost

    def complete(self, worker_id: str, items: list[tuple[int, Result]]) -> int:
        """Take finished attempts; returns how many were accepted (the others were late duplicates)."""
        with self._cond:
            worker = self._touch(worker_id, self._clock())
            worker.free = min(worker.info.capacity, worker.free + len(items))
            if self._state != RUNNING:
                return 0
            accepted = sum(self._accept(worker, lease_id, result) for lease_id, result in items)
            self._cond.notify_all()
            return accepted

    def adopt(self, worker_id: str, holding: list[tuple[int, str]]) -> int:
        """Let a worker that reconnected keep the downloads it still runs, under their lease ids.

        After a server restart, or a silence long enough for its leases to expire,
        each URL it holds is leased back to it if still queued, or claimed for it
        until offered (for a lease timeout), so no other worker fetches it again.
        Returns how many it holds now.
        """
        with self._cond:
            now = self._clock()
            worker = self._touch(worker_id, now)
            held = 0
            for lease_id, url in holding:
                slot = self._slots.get(url)
                if slot is None:
                    self._claims[url] = (worker_id, lease_id, now + self.lease_timeout)
                    if len(self._claims) > EARLY_LIMIT:
                        del self._claims[next(iter(self._claims))]
                elif slot.lease == lease_id or not slot.lease:
                    if not slot.lease:
                        self._queued -= 1  # its queue entry is skipped from now on
                        self._lease_slot(slot, worker, lease_id, now)
                    slot.expires = now + self.lease_timeout
                    held += 1
            return held

    def release(self, worker_id: str, lease_ids: list[int], leaving: bool = False) -> int:
        """Put leases back in the queue now (a worker stopping); returns how many were still held."""
        with self._cond:
            worker = self._touch(worker_id, self._clock())
            returned = 0
            for lease_id in lease_ids:
                slot = self._leased(lease_id)
                if slot is not None:
                    self._drop_lease(slot)
                    self._requeue(slot)
                    returned += 1
            self._counts["released"] += returned
            if leaving:
                worker.left = True
                self._events.append(f"worker {worker_id} left, returning {returned} leases")
            return returned

    def stats(self) -> dict[str, Any]:
        """Counts and connected workers, for ``fetcher status HOST:PORT``."""
        with self._cond:
            now = self._clock()
            workers = [{"id": w.info.id, "host": w.info.host, "pid": w.info.pid, "out": w.info.out,
                        "backend": w.info.backend, "pool": w.info.pool, "held": w.held, "done": w.done,
                        "seen_s_ago": round(now - w.seen, 1)}
                       for w in self._workers.values() if self._live(w, now)]
            return {"run_id": self.run_id, "epoch": self.epoch, "state": self._state, "total": self.total,
                    "final": dict(self._final), "queued": self._queued, "leased": len(self._leases),
                    "counts": dict(self._counts), "workers": workers, "lease_timeout": self.lease_timeout}

    # -- engine methods (the RemoteBackend, in the engine's thread) -------------------------------

    def offer(self, task: Task) -> None:
        """Make a task leasable (or finish it at once if a worker already sent its result)."""
        with self._cond:
            early = self._early.pop(task.url, None)
            if early is not None:
                self._finished.append(replace(early, index=task.index))
                return
            slot = self._slots[task.url] = _Slot(task)
            if self._claims and self._claimed(slot):
                return
            self._queue.append(task.url)
            self._queued += 1

    def collect(self, timeout: float | None) -> list[Result]:
        """Accepted results; waits up to ``timeout`` for one, or for a worker asking for more."""
        with self._cond:
            self._reap(self._clock())
            if not self._finished:
                self._cond.wait(timeout)
            results, self._finished = self._finished, []
            return results

    def room(self) -> int:
        """How many more tasks workers could take now: their free slots, less what is queued.

        At least one task is kept queued even with no worker connected, so the
        engine reads on: an input that is all done already (a restart) or all
        bad lines ends without waiting for a worker.
        """
        with self._cond:
            now = self._clock()
            free = sum(w.free for w in self._workers.values() if self._live(w, now))
            return max(free - self._queued, 1 - self._queued, 0)

    def finish(self, interrupted: bool) -> None:
        """End the run: every worker's next call is answered with ``Finished``."""
        with self._cond:
            self._state = STOPPED if interrupted else DONE
            self._cond.notify_all()

    def everyone_told(self) -> bool:
        """True once every connected worker has heard that the run is over."""
        with self._cond:
            now = self._clock()
            return all(w.told_end or not self._live(w, now) for w in self._workers.values())

    def note_final(self, result: Result) -> None:
        """Count a final result (the collector's ``on_result`` hook)."""
        with self._cond:
            self._final[result.status.value] += 1

    def take_events(self) -> list[str]:
        """Lines worth telling the server's user (workers joining, leaving, leases expiring)."""
        with self._cond:
            events, self._events = self._events, []
            return events

    # -- internals (lock held) ---------------------------------------------------------------

    def _touch(self, worker_id: str, now: float) -> _Worker:
        worker = self._workers.get(worker_id)
        if worker is None:  # called without hello (it should not): a worker we know nothing of
            info = WorkerInfo(worker_id, "?", 0, "?", "?", 0, 0)
            worker = self._workers[worker_id] = _Worker(info, now)
        worker.seen = now
        return worker

    def _live(self, worker: _Worker, now: float) -> bool:
        return not worker.left and now - worker.seen <= self.live_s

    def _leased(self, lease_id: int) -> _Slot | None:
        url = self._leases.get(lease_id)
        slot = self._slots.get(url) if url is not None else None
        return slot if slot is not None and slot.lease == lease_id else None

    def _grant(self, worker: _Worker, n: int, now: float) -> list[tuple[int, Task]]:
        granted: list[tuple[int, Task]] = []
        while len(granted) < n and self._queue:
            slot = self._slots.get(self._queue.popleft())
            if slot is None or slot.lease:  # completed or leased since it was queued
                continue
            self._queued -= 1
            self._lease_slot(slot, worker, self._next_lease, now)
            self._next_lease += 1
            granted.append((slot.lease, slot.task))
        self._counts["leased"] += len(granted)
        return granted

    def _lease_slot(self, slot: _Slot, worker: _Worker, lease_id: int, now: float) -> None:
        slot.lease, slot.worker, slot.expires = lease_id, worker.info.id, now + self.lease_timeout
        self._leases[lease_id] = slot.task.url
        heapq.heappush(self._expiry, (slot.expires, lease_id))
        worker.held += 1

    def _claimed(self, slot: _Slot) -> bool:
        """Lease a newly offered slot to the worker that said it is still fetching its URL."""
        claim = self._claims.pop(slot.task.url, None)
        now = self._clock()
        if claim is None or claim[2] < now or claim[0] not in self._workers:
            return False
        self._lease_slot(slot, self._workers[claim[0]], claim[1], now)
        return True

    def _accept(self, worker: _Worker, lease_id: int, result: Result) -> int:
        slot = self._slots.get(result.url)
        # A success is final whoever made it; a failure counts only from the current lease.
        if slot is None or (slot.lease != lease_id and result.status is Status.FAILED):
            self._counts["duplicates"] += 1
            if slot is None and result.status is not Status.FAILED:
                self._remember_early(self._labelled(result, worker, result.index))
            return 0
        if slot.lease:
            self._drop_lease(slot)
        else:
            self._queued -= 1
        del self._slots[result.url]
        self._finished.append(self._labelled(result, worker, slot.task.index))
        worker.done += 1
        return 1

    def _labelled(self, result: Result, worker: _Worker, index: int) -> Result:
        """The result as the engine needs it: its task's index, and which worker holds the file."""
        return replace(result, index=index, extra={**result.extra, "worker": worker.info.label})

    def _remember_early(self, result: Result) -> None:
        """A success for a URL not in flight: after a server restart, one not yet read from the input."""
        self._early[result.url] = result
        if len(self._early) > EARLY_LIMIT:
            del self._early[next(iter(self._early))]

    def _drop_lease(self, slot: _Slot) -> None:
        del self._leases[slot.lease]
        owner = self._workers.get(slot.worker)
        if owner is not None:
            owner.held -= 1
        slot.lease, slot.worker = 0, ""

    def _requeue(self, slot: _Slot) -> None:
        self._queue.appendleft(slot.task.url)
        self._queued += 1

    def _reap(self, now: float) -> None:
        expired: Counter[str] = Counter()
        while self._expiry and self._expiry[0][0] <= now:
            lease_id = heapq.heappop(self._expiry)[1]
            slot = self._leased(lease_id)
            if slot is None:
                continue
            if slot.expires > now:  # renewed by a heartbeat since it was pushed
                heapq.heappush(self._expiry, (slot.expires, lease_id))
                continue
            expired[slot.worker] += 1
            self._drop_lease(slot)
            self._requeue(slot)
        for worker_id, count in expired.items():
            self._counts["expired"] += count
            self._events.append(f"{count} leases of worker {worker_id} expired (no heartbeat for "
                                f"{self.lease_timeout:g} s): handed out again")
