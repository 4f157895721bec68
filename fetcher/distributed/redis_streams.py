"""The Redis broker's streams as ``serve`` drives them: add tasks, read results, reclaim, recover.

RedisServe (redis_serve.py) is the ServeBroker face the engine sees; this base
class holds the connection, the FlightBook and every stream operation, each a
batch of commands (a Lua script adds a batch of tasks in one call, XACK and
XDEL take many ids).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fetcher.distributed import wire
from fetcher.distributed.broker import RedisSpec
from fetcher.distributed.flights import FlightBook
from fetcher.distributed.dropped import Dropped
from fetcher.distributed.redis_common import GROUP, Keys, connect, display, entry_id, message_of

if TYPE_CHECKING:
    from fetcher.models import Result

log = logging.getLogger("fetcher.distributed")
REAPER = "fetcher-serve-reaper"
READ_COUNT = 5000
PAGE = 1000
SOCKET_TIMEOUT_S = 10.0
# One command adds a batch of tasks: redis-py spends ~20x more per pipelined XADD than per argument.
ADD_TASKS = """
local ids = {}
for i, message in ipairs(ARGV) do ids[i] = redis.call('XADD', KEYS[1], '*', 'm', message) end
return ids
"""


class RunStreams:
    """One run's keys in Redis, from ``serve``'s side (one thread: the engine's)."""

    def __init__(self, spec: RedisSpec, lease_timeout: float) -> None:
        self.lease_timeout = lease_timeout
        self._spec, self._keys = spec, Keys(spec.queue)
        self._where = f"{display(spec.url)} (queue {spec.queue})"
        self._redis = connect(spec, SOCKET_TIMEOUT_S)
        self._add_tasks = self._redis.register_script(ADD_TASKS)  # EVALSHA, and EVAL again after a Redis restart
        self._book = FlightBook()
        self._finished: list[Result] = []
        self._cursor = "0-0"  # results: from the start, so what an earlier serve left is picked up
        self._counts: Counter[str] = Counter()
        self._events: list[str] = []
        self._workers: dict[str, dict[str, Any]] = {}  # alive now
        self._ever: dict[str, dict[str, Any]] = {}  # every worker seen, as last seen (for the summary)
        self._trash: list[str] = []  # results-stream entries to delete
        self._dropped = Dropped(log, "fetcher serve")

    def _publish_run(self) -> None:
        raise NotImplementedError

    def _entries(self, stream: str) -> list[tuple[str, object]]:
        """Every entry of a stream (bounded: only what is in flight is there), page by page: (id, ``m`` field)."""
        found: list[tuple[str, object]] = []
        start = "-"
        while True:
            page = self._redis.xrange(stream, start, "+", count=PAGE)
            found.extend((entry_id(entry), message_of(fields)) for entry, fields in page)
            if len(page) < PAGE:
                return found
            start = "(" + found[-1][0]

    def _drop(self, stream: str, entry: str, why: Exception) -> None:
        self._dropped(f"entry {entry} of {stream}", why)
        self._redis.xdel(stream, entry)

    def _place(self) -> None:
        """Add the tasks offered (or handed out again) since the last call, in one round trip."""
        if not self._book.unplaced:
            return
        unplaced = self._book.unplaced
        while unplaced:
            chunk = [unplaced.popleft() for _ in range(min(PAGE, len(unplaced)))]
            try:
                entries = self._add_tasks(keys=[self._keys.tasks],
                                          args=[wire.dump_task(self._book.slots[url].task) for url in chunk])
            except BaseException:
                unplaced.extendleft(reversed(chunk))  # not added (or not known to be): the next call tries again
                raise
            for url, entry in zip(chunk, entries):
                self._book.placed(url, entry_id(entry))

    def _read(self, block: int | None) -> None:
        replies = self._redis.xread({self._keys.results: self._cursor}, count=READ_COUNT, block=block)
        done: list[str] = []
        left: Counter[str] = Counter()
        for _stream, items in replies or []:
            for raw_entry, fields in items:
                self._cursor = entry = entry_id(raw_entry)
                try:
                    kind, message = wire.load(message_of(fields))
                    if kind == "results":
                        items = wire.results_of(message)
                        self._book.hold(entry, len(items))
                        for lease, result in items:
                            self._result(entry, lease, result, done)
                    elif kind == "release":
                        self._release(entry, *wire.release_of(message), left)
                    else:
                        raise wire.WireError(f"a {kind!r} message in the results stream")
                except wire.WireError as exc:
                    self._drop(self._keys.results, entry, exc)
        for worker_id, count in left.items():
            self._events.append(f"worker {worker_id} left, returning {count} leases")
        if done:  # the accepted URLs' current leases: acknowledged and gone, so their holders see them lost
            pipe = self._redis.pipeline(transaction=False)
            pipe.xack(self._keys.tasks, GROUP, *done)
            pipe.xdel(self._keys.tasks, *done)
            pipe.execute()

    def _result(self, entry: str, lease: str, result: Result, done: list[str]) -> None:
        flight = self._book.accept(lease, result, entry)
        if flight is None:
            self._counts["duplicates"] += 1
            return
        if flight.entry is not None:
            done.append(flight.entry)
        index = flight.task.index
        self._finished.append(result if result.index == index else replace(result, index=index))

    def _release(self, entry: str, worker: dict[str, str], lease: str, leaving: bool, left: Counter[str]) -> None:
        self._trash.append(entry)
        if self._book.take_back(lease):  # handed out again as a new entry by the next _place
            self._counts["released"] += 1
            self._redis.xack(self._keys.tasks, GROUP, lease)
            self._redis.xdel(self._keys.tasks, lease)
            if leaving:
                left[worker["id"]] += 1

    def _flush_trash(self) -> None:
        if self._book.deletable:
            self._trash.extend(self._book.deletable)
            self._book.deletable.clear()
        if self._trash:
            for start in range(0, len(self._trash), PAGE):
                self._redis.xdel(self._keys.results, *self._trash[start:start + PAGE])
            self._trash.clear()

    def _refresh_workers(self) -> None:
        keys = list(self._redis.scan_iter(self._keys.worker_pattern, count=1000))
        workers: dict[str, dict[str, Any]] = {}
        for key, text in zip(keys, self._redis.mget(keys) if keys else []):
            if text is None:
                continue  # expired between SCAN and MGET
            try:
                worker = wire.worker_of(text)
            except wire.WireError as exc:
                self._dropped(f"key {key[:80]!r}", exc)
                known = self._workers.get(key.decode("utf-8", "replace").rsplit(":worker:", 1)[-1])
                if known is not None:  # a live worker's, overwritten: it writes it again on its next call
                    workers[known["id"]] = known
                else:  # nobody's: in the run's namespace, so deleted
                    self._redis.delete(key)
                continue
            if worker["id"] not in self._workers:
                self._events.append(f"worker {worker['id']} joined ({worker.get('backend')}, pool "
                                    f"{worker.get('pool')}, files in {worker.get('host')}:{worker.get('out')})")
            workers[worker["id"]] = worker
        self._workers = workers
        self._ever.update(workers)

    def _reap(self) -> None:
        """Leases idle longer than the lease timeout go back as new entries (XAUTOCLAIM to a reaper)."""
        cursor, expired = "0-0", 0
        for _ in range(100):  # bounded: at most 100 pages a tick
            reply = self._redis.xautoclaim(self._keys.tasks, GROUP, REAPER, int(self.lease_timeout * 1000),
                                           cursor, count=PAGE)
            cursor, entries = entry_id(reply[0]), reply[1]
            ids = [entry_id(entry[0] if isinstance(entry, (list, tuple)) else entry) for entry in entries]
            expired += sum(self._book.take_back(entry) for entry in ids)
            if ids:  # an earlier serve's entry that nobody renews is not worth adopting any more
                gone = set(ids)
                self._book.adoptable = {u: e for u, e in self._book.adoptable.items() if e not in gone}
                self._redis.xack(self._keys.tasks, GROUP, *ids)
                self._redis.xdel(self._keys.tasks, *ids)
            if cursor == "0-0":
                break
        if expired:
            self._counts["expired"] += expired
            self._events.append(f"{expired} leases expired (no heartbeat for {self.lease_timeout:g} s): "
                                "handed out again")

    def _recover(self) -> None:
        """The run's keys are gone: make them again and put back every URL in flight."""
        import redis

        try:
            self._redis.xgroup_create(self._keys.tasks, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        present = {entry for entry, _ in self._entries(self._keys.tasks)}
        lost = [entry for entry in list(self._book.by_entry) if entry not in present]
        for entry in lost:
            self._book.take_back(entry)
        self._publish_run()
        self._cursor = "0-0"
        self._events.append(f"the run's keys were gone from Redis at {self._where}: put back {len(lost)} "
                            "URLs in flight (the journal holds the rest)")
