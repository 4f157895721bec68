"""The Redis broker's streams as ``serve`` drives them: add tasks, read results, reclaim, recover.

RedisServe (serve.py) is the ServeBroker face the engine sees, and holds one
RunStreams: the connection, the FlightBook and every stream operation, each a
batch of commands (a Lua script adds a batch of tasks in one call, XACK and
XDEL take many ids). What RedisServe reads of it is public here; the rest is not.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fetcher.distributed.broker import RedisSpec
from fetcher.distributed.dropped import Dropped
from fetcher.distributed.redis import wire
from fetcher.distributed.redis.common import GROUP, Keys, connect, display, entry_id, message_of
from fetcher.distributed.redis.flights import FlightBook

if TYPE_CHECKING:
    from fetcher.models import Result

log = logging.getLogger("fetcher.distributed")
REAPER = "fetcher-serve-reaper"
READ_COUNT = 5000
PAGE = 1000
SOCKET_TIMEOUT_S = 10.0
# One command adds a batch of tasks: redis-py spends ~20x more per pipelined XADD than per argument,
# and more per argument and per reply element than per byte: the batch goes as one argument, its
# messages one a line (JSON text never holds a raw newline), the ids come back as one line.
ADD_TASKS = """
local ids = {}
for message in string.gmatch(ARGV[1], '[^\\n]+') do ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'm', message) end
return table.concat(ids, ' ')
"""
# Acknowledge and delete a batch of tasks-stream entries, their ids as one argument (as ADD_TASKS).
DONE_TASKS = """
local ids = {}
for entry in string.gmatch(ARGV[2], '[^ ]+') do
  ids[#ids + 1] = entry
  if #ids == 500 then redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)); redis.call('XDEL', KEYS[1], unpack(ids)); ids = {} end
end
if #ids > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)); redis.call('XDEL', KEYS[1], unpack(ids)) end
return 0
"""


class RunStreams:
    """One run's keys in Redis, from ``serve``'s side (one thread: the engine's).

    Attributes:
        redis, keys, where: the connection, the run's key names, and where they are (for messages).
        book: the URLs in flight, by lease (flights.py).
        finished: Results accepted and not yet handed to the engine.
        counts, events: lease counters and lines for the log, shared with RedisServe.
        dropped: the malformed values read (and dropped) from the run's keys, counted and logged.
        workers, ever: the workers alive now, and every one seen (as last seen).
    """

    def __init__(self, spec: RedisSpec, lease_timeout: float) -> None:
        self.lease_timeout = lease_timeout
        self.keys = Keys(spec.queue)
        self.where = f"{display(spec.url)} (queue {spec.queue})"
        self.redis = connect(spec, SOCKET_TIMEOUT_S)
        self._add_tasks = self.redis.register_script(ADD_TASKS)  # EVALSHA, and EVAL again after a Redis restart
        self._done_tasks = self.redis.register_script(DONE_TASKS)
        self.book = FlightBook()
        self.finished: list[Result] = []
        self._cursor = "0-0"  # results: from the start, so what an earlier serve left is picked up
        self.counts: Counter[str] = Counter()
        self.events: list[str] = []
        self.workers: dict[str, dict[str, Any]] = {}  # alive now
        self.ever: dict[str, dict[str, Any]] = {}  # every worker seen, as last seen (for the summary)
        self._trash: list[str] = []  # results-stream entries to delete
        self.dropped = Dropped(log, "fetcher serve")
        self.reports: list[tuple[str, dict[str, Any]]] = []  # shard reports read (serve_shards.py takes them)

    def take(self) -> list[Result]:
        """The Results accepted since the last call."""
        results, self.finished = self.finished, []
        return results

    def entries(self, stream: str) -> list[tuple[str, object]]:
        """Every entry of a stream (bounded: only what is in flight is there), page by page: (id, ``m`` field)."""
        found: list[tuple[str, object]] = []
        start = "-"
        while True:
            page = self.redis.xrange(stream, start, "+", count=PAGE)
            found.extend((entry_id(entry), message_of(fields)) for entry, fields in page)
            if len(page) < PAGE:
                return found
            start = "(" + found[-1][0]

    def drop(self, stream: str, entry: str, why: Exception) -> None:
        self.dropped(f"entry {entry} of {stream}", why)
        self.redis.xdel(stream, entry)

    def place(self) -> None:
        """Add the tasks offered (or handed out again) since the last call, in one round trip."""
        if not self.book.unplaced:
            return
        unplaced = self.book.unplaced
        while unplaced:
            chunk = [unplaced.popleft() for _ in range(min(PAGE, len(unplaced)))]
            try:
                reply = self._add_tasks(keys=[self.keys.tasks],
                                        args=["\n".join([wire.dump_task(self.book.slots[url].task) for url in chunk])])
            except BaseException:
                unplaced.extendleft(reversed(chunk))  # not added (or not known to be): the next call tries again
                raise
            for url, entry in zip(chunk, entry_id(reply).split(" ")):
                self.book.placed(url, entry)

    def read(self, block: int | None) -> bool:
        """Read the results stream from the cursor (``block`` ms at most); True if anything was read."""
        before = self._cursor
        replies = self.redis.xread({self.keys.results: self._cursor}, count=READ_COUNT, block=block)
        done: list[str] = []
        left: Counter[str] = Counter()
        for _stream, items in replies or []:
            for raw_entry, fields in items:
                self._cursor = entry = entry_id(raw_entry)
                try:
                    kind, message = wire.load(message_of(fields))
                    if kind == "results":
                        items = wire.results_of(message)
                        self.book.hold(entry, len(items))
                        for lease, result in items:
                            self._result(entry, lease, result, done)
                    elif kind == "release":
                        self._release(entry, *wire.release_of(message), left)
                    elif kind == "shard":
                        worker_id, reports = wire.reports_of(message)
                        self.reports.extend((worker_id, report) for report in reports)
                        self._trash.append(entry)
                    else:
                        raise wire.WireError(f"a {kind!r} message in the results stream")
                except wire.WireError as exc:
                    self.drop(self.keys.results, entry, exc)
        for worker_id, count in left.items():
            self.events.append(f"worker {worker_id} left, returning {count} leases")
        if done:  # the accepted URLs' current leases: acknowledged and gone, so their holders see them lost
            self._done_tasks(keys=[self.keys.tasks], args=[GROUP, " ".join(done)])
        return self._cursor != before

    def _result(self, entry: str, lease: str, result: Result, done: list[str]) -> None:
        flight = self.book.accept(lease, result, entry)
        if flight is None:
            self.counts["duplicates"] += 1
            return
        if flight.entry is not None:
            done.append(flight.entry)
        index = flight.task.index
        self.finished.append(result if result.index == index else replace(result, index=index))

    def _release(self, entry: str, worker: dict[str, str], lease: str, leaving: bool, left: Counter[str]) -> None:
        self._trash.append(entry)
        if self.book.take_back(lease):  # handed out again as a new entry by the next _place
            self.counts["released"] += 1
            self.redis.xack(self.keys.tasks, GROUP, lease)
            self.redis.xdel(self.keys.tasks, lease)
            if leaving:
                left[worker["id"]] += 1

    def discard_read(self) -> None:
        """Delete every results entry read so far (the run is over, its journal closed)."""
        self._trash.extend(self.book.all_read())
        self.flush_trash()

    def flush_trash(self) -> None:
        if self.book.deletable:
            self._trash.extend(self.book.deletable)
            self.book.deletable.clear()
        if self._trash:
            for start in range(0, len(self._trash), PAGE):
                self.redis.xdel(self.keys.results, *self._trash[start:start + PAGE])
            self._trash.clear()

    def refresh_workers(self) -> None:
        keys = list(self.redis.scan_iter(self.keys.worker_pattern, count=1000))
        workers: dict[str, dict[str, Any]] = {}
        for key, text in zip(keys, self.redis.mget(keys) if keys else []):
            if text is None:
                continue  # expired between SCAN and MGET
            try:
                worker = wire.worker_of(text)
            except wire.WireError as exc:
                self.dropped(f"key {key[:80]!r}", exc)
                known = self.workers.get(key.decode("utf-8", "replace").rsplit(":worker:", 1)[-1])
                if known is not None:  # a live worker's, overwritten: it writes it again on its next call
                    workers[known["id"]] = known
                else:  # nobody's: in the run's namespace, so deleted
                    self.redis.delete(key)
                continue
            if worker["id"] not in self.workers:
                self.events.append(f"worker {worker['id']} joined ({worker.get('backend')}, pool "
                                    f"{worker.get('pool')}, files in {worker.get('host')}:{worker.get('out')})")
            workers[worker["id"]] = worker
        self.workers = workers
        self.ever.update(workers)

    def reap(self) -> bool:
        """Leases idle longer than the lease timeout go back as new entries (XAUTOCLAIM to a reaper).

        False if the tasks stream or its group is gone: Redis was emptied (or restarted without its
        data) since the caller last found the run's description; the caller then recovers.
        """
        import redis

        cursor, expired = "0-0", 0
        for _ in range(100):  # bounded: at most 100 pages a tick
            try:
                reply = self.redis.xautoclaim(self.keys.tasks, GROUP, REAPER, int(self.lease_timeout * 1000),
                                               cursor, count=PAGE)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                return False
            cursor, entries = entry_id(reply[0]), reply[1]
            ids = [entry_id(entry[0] if isinstance(entry, (list, tuple)) else entry) for entry in entries]
            expired += sum(self.book.take_back(entry) for entry in ids)
            if ids:  # an earlier serve's entry that nobody renews is not worth adopting any more
                gone = set(ids)
                self.book.adoptable = {u: e for u, e in self.book.adoptable.items() if e not in gone}
                self.redis.xack(self.keys.tasks, GROUP, *ids)
                self.redis.xdel(self.keys.tasks, *ids)
            if cursor == "0-0":
                break
        if expired:
            self.counts["expired"] += expired
            self.events.append(f"{expired} lease{'s' if expired != 1 else ''} expired (no heartbeat for "
                               f"{self.lease_timeout:g} s): "
                                "handed out again")
        return True

    def recover(self) -> None:
        """The run's keys are gone: make them again and put back every URL in flight (the caller
        publishes the run's description again)."""
        import redis

        try:
            self.redis.xgroup_create(self.keys.tasks, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        present = {entry for entry, _ in self.entries(self.keys.tasks)}
        lost = [entry for entry in list(self.book.by_entry) if entry not in present]
        for entry in lost:
            self.book.take_back(entry)
        self._cursor = "0-0"
        self.events.append(f"the run's keys were gone from Redis at {self.where}: put back {len(lost)} "
                            "URLs in flight (the journal holds the rest)")
