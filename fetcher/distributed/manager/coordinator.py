"""The Coordinator: the server's face to workers and to the engine, behind one lock.

- The remote methods of ``protocol.EXPOSED`` are called by workers through the
  manager server, one thread per connection. None of them ever blocks: each
  takes the lock, moves a batch between the dicts of the LeaseBook, and returns.
- The engine methods (``offer``, ``collect``, ``room``, ``finish``) are called
  by the RemoteBackend in the engine's thread.

The lease rules live in leases.py; this module adds who the workers are, what
they can take (``room``), the run's state, counters and events.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fetcher import __version__
from fetcher.distributed.calls import first_seq, seen_before
from fetcher.distributed.manager.leases import LeaseBook
from fetcher.distributed.protocol import (PROTOCOL, Finished, Grant, Refusal, RunRules, Wait, Welcome,
                                          WorkerInfo)
from fetcher.models import FetchTask as Task
from fetcher.models import Result

RUNNING, DONE, STOPPED = "running", "done", "stopped"
MAX_GRANT = 5_000  # tasks per lease reply: bounds one message to a few hundred KiB
POLL_HINT_S = 0.05  # "ask again in" when the queue is empty
MAX_HEARTBEAT_S = 2.0


@dataclass(slots=True)
class _Worker:
    info: WorkerInfo
    seen: float
    free: int = 0  # slots it has free: declared at each lease, grown by what it completes since
    done: int = 0  # completions accepted from it
    told_end: bool = False
    left: bool = False
    greeted: bool = True  # said hello; a caller that never did (a forger, say) is no worker of the run
    label: dict[str, str] = field(default_factory=dict)  # info.label, made once: every result shares it

    def __post_init__(self) -> None:
        self.label = self.info.label


class Coordinator:
    """Leases the tasks the engine offers to workers and hands their results back.

    Args:
        rules: what workers fetch by (the run's options that travel, its cookies), sent in ``Welcome``.
        run_id: stays the same across restarts of the server on one output folder.
        epoch: differs on every start; lease ids are made from it so they never repeat.
        lease_timeout: seconds a lease lives without a heartbeat.
        total: URLs in the input if known (for ``stats``).
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, rules: RunRules, run_id: str, epoch: int, lease_timeout: float = 60.0,
                 total: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
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
        self._book = LeaseBook(lease_timeout, epoch << 32)
        self._finished: list[Result] = []  # accepted, not yet collected by the engine
        self._workers: dict[str, _Worker] = {}
        self._state = RUNNING
        self._counts: Counter[str] = Counter()
        self._final: Counter[str] = Counter()
        self._events: list[str] = []
        self._mail: dict[str, list[dict[str, Any]]] = {}  # shard orders per worker, kept until seen (calls.py)
        self._next_seq = first_seq(epoch)
        self._reports: list[tuple[str, dict[str, Any]]] = []
        self._shards: dict[str, int] = {}

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
                worker.info, worker.seen, worker.left, worker.greeted = info, self._clock(), False, True
                worker.label = info.label  # a call before this hello made a placeholder "?" label
        return Welcome(self.run_id, self.epoch, self.rules, self.lease_timeout, self.heartbeat_s)

    def lease(self, worker_id: str, n: int) -> Grant | Wait | Finished:
        with self._cond:
            now = self._clock()
            worker = self._touch(worker_id, now)
            if (ended := self._end_for(worker)) is not None:
                return ended
            self._reap(now)
            granted = self._book.grant(worker_id, max(0, min(n, MAX_GRANT)), now)
            self._counts["leased"] += len(granted)
            worker.free = max(0, n - len(granted))
            if worker.free:
                self._cond.notify_all()  # room for more: wake the engine to submit
        return Grant(granted, self.lease_timeout) if granted else Wait(POLL_HINT_S)

    def _end_for(self, worker: _Worker) -> Finished | None:
        """Finished (and the worker marked as told) once the run is no longer running; else None."""
        if self._state == RUNNING:
            return None
        worker.told_end = True
        return Finished(self._state == STOPPED)

    def heartbeat(self, worker_id: str, lease_ids: list[int]) -> list[int] | Finished:
        """Renew leases; returns those the worker no longer holds (expired, or completed by another)."""
        with self._cond:
            now = self._clock()
            if (ended := self._end_for(self._touch(worker_id, now))) is not None:
                return ended
            return self._book.renew(worker_id, lease_ids, now)

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
            self._touch(worker_id, now)
            return self._book.adopt(worker_id, holding, now)

    def release(self, worker_id: str, lease_ids: list[int], leaving: bool = False) -> int:
        """Put leases back in the queue now (a worker stopping); returns how many were still held."""
        with self._cond:
            worker = self._touch(worker_id, self._clock())
            returned = self._book.release(lease_ids)
            self._counts["released"] += returned
            if leaving:
                worker.left = True
                self._events.append(f"worker {worker_id} left, returning {returned} leases")
            return returned

    def exchange(self, worker_id: str, reports: list[dict[str, Any]], seen: int = 0) -> list[dict[str, Any]]:
        """A worker's shard reports in; the shard orders posted for it that it has not seen out.

        An order stays until a call says it was seen (``seen``: the last one the
        worker carried out), so a reply lost on the way costs nothing, nor does a
        caller that reads a worker's mailbox under its id (webdataset runs).
        """
        with self._cond:
            self._touch(worker_id, self._clock())
            if reports:
                self._reports.extend((worker_id, report) for report in reports)
                self._cond.notify_all()
            mail = [order for order in self._mail.pop(worker_id, []) if not seen_before(order["seq"], seen)]
            if mail:
                self._mail[worker_id] = mail
            return list(mail)

    def stats(self, gone_too: bool = False) -> dict[str, Any]:
        """Counts and connected workers, for ``fetcher status HOST:PORT``.

        ``gone_too``: list also the workers that left or went silent (killed, say),
        with ``"gone": True``: their files count in the run's summary.
        """
        with self._cond:
            now = self._clock()
            workers = [{"id": w.info.id, "host": w.info.host, "pid": w.info.pid, "out": w.info.out,
                        "backend": w.info.backend, "pool": w.info.pool, "held": self._book.held[w.info.id],
                        "done": w.done, "seen_s_ago": round(now - w.seen, 1), "gone": not self._live(w, now)}
                       for w in self._workers.values() if (w.greeted or w.done) and (gone_too or self._live(w, now))]
            return {"run_id": self.run_id, "epoch": self.epoch, "state": self._state, "total": self.total,
                    "final": dict(self._final), "queued": self._book.queued, "leased": self._book.leased,
                    "counts": dict(self._counts), "workers": workers, "lease_timeout": self.lease_timeout,
                    **({"shards": dict(self._shards)} if self._shards else {})}

    # -- engine methods (the RemoteBackend, in the engine's thread) -------------------------------

    def offer(self, task: Task) -> None:
        """Make a task leasable (or finish it at once if a worker already sent its success)."""
        with self._cond:
            kept = self._book.offer(task, self._clock())
            if kept is not None:
                self._finished.append(replace(kept, index=task.index))

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
            queued = self._book.queued
            return max(free - queued, 1 - queued, 0)

    def finish(self, interrupted: bool) -> None:
        """End the run: every worker's next call is answered with ``Finished``."""
        with self._cond:
            self._state = STOPPED if interrupted else DONE
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        with self._cond:
            return self._state == RUNNING

    def everyone_told(self) -> bool:
        """True once every connected worker has heard that the run is over."""
        with self._cond:
            now = self._clock()
            return all(w.told_end or not w.greeted or not self._live(w, now) for w in self._workers.values())

    def note_final(self, result: Result) -> None:
        """Count a final result (the collector's ``on_result`` hook)."""
        with self._cond:
            self._final[result.status.value] += 1

    def post(self, worker_id: str, order: dict[str, Any]) -> None:
        """Leave a shard order for a worker, numbered: it has it on its next ``exchange``, until it has seen it."""
        with self._cond:
            self._mail.setdefault(worker_id, []).append({**order, "seq": self._next_seq})
            self._next_seq += 1

    def take_reports(self) -> list[tuple[str, dict[str, Any]]]:
        """The workers' shard reports since the last call, as ``(worker id, report)``."""
        with self._cond:
            reports, self._reports = self._reports, []
            return reports

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a shard report (the engine has nothing else to wait for)."""
        with self._cond:
            if not self._reports:
                self._cond.wait(timeout)

    def publish_shards(self, counts: dict[str, int]) -> None:
        """The shard counts ``fetcher status`` shows."""
        with self._cond:
            self._shards = dict(counts)

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
            worker = self._workers[worker_id] = _Worker(info, now, greeted=False)
        worker.seen = now
        return worker

    def _live(self, worker: _Worker, now: float) -> bool:
        return not worker.left and now - worker.seen <= self.live_s

    def _accept(self, worker: _Worker, lease_id: int, result: Result) -> int:
        task = self._book.accept(lease_id, result)
        if task is None:
            self._counts["duplicates"] += 1
            if result.ok and not self._book.in_flight(result.url):
                self._book.remember(self._labelled(result, worker, result.index))
            return 0
        self._finished.append(self._labelled(result, worker, task.index))
        worker.done += 1
        return 1

    def _labelled(self, result: Result, worker: _Worker, index: int) -> Result:
        """The result as the engine needs it: its task's index, and which worker holds the file."""
        return replace(result, index=index, extra={**result.extra, "worker": worker.label})

    def _reap(self, now: float) -> None:
        for worker_id, count in self._book.reap(now).items():
            self._counts["expired"] += count
            self._events.append(f"{count} lease{'s' if count != 1 else ''} of worker {worker_id} expired "
                                f"(no heartbeat for {self.lease_timeout:g} s): handed out again")
