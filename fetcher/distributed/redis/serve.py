"""``serve``'s side of the Redis broker: the engine's tasks into a stream, workers' results out of another.

Everything runs in the engine's thread, inside ``collect``: add what was
offered (streams.py), read results (a short blocking XREAD), and every
``TICK_S`` refresh who is alive, reclaim expired leases (XAUTOCLAIM: each
goes back as a new entry), check that the run's keys are still there, and
publish the counters. When Redis is unreachable, ``collect`` returns nothing
and tries again with backoff; the engine, journal and politeness rules carry
on unchanged. When Redis lost the run's keys (emptied, or restarted without
persistence), every URL in flight is put back: the journal says what is final.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fetcher import __version__
from fetcher.backoff import Backoff
from fetcher.distributed.redis import wire
from fetcher.distributed.broker import RedisSpec
from fetcher.distributed.calls import first_seq
from fetcher.distributed.protocol import PROTOCOL, RunRules
from fetcher.distributed.redis.common import GROUP, redis_errors
from fetcher.distributed.redis.streams import RunStreams, log
from fetcher.errors import ConfigError

if TYPE_CHECKING:
    from fetcher.models import FetchTask as Task
    from fetcher.models import Result

TICK_S = 0.25
READ_BLOCK_MS = 100
RECONNECT = Backoff(first=0.1, cap=5.0, max_doublings=10)


class RedisServe:
    """The ServeBroker of ``--broker redis://``, over one RunStreams; see the module doc and common.py
    for the keys."""

    def __init__(self, spec: RedisSpec, rules: RunRules, run_id: str, epoch: int, lease_timeout: float,
                 total: int | None) -> None:
        self._streams = RunStreams(spec, lease_timeout)
        self._spec, self.lease_timeout = spec, lease_timeout
        self.rules, self.run_id, self.epoch, self.total = rules, run_id, epoch, total
        self.heartbeat_s = min(lease_timeout / 4, 2.0)
        self._state = "running"
        self._final: Counter[str] = Counter()
        self._next_tick = 0.0
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._posts: list[tuple[str, str]] = []  # shard orders not yet pushed: (mail key, message)
        self._next_seq = first_seq(epoch)
        self._shards: dict[str, int] = {}

    # -- opening -----------------------------------------------------------------------------

    def start(self) -> str:
        """Create the group, adopt what an earlier serve left in the tasks stream, publish the run.

        Raises:
            ConfigError: Redis cannot be reached or refuses the credentials.
        """
        try:
            self._open()
        except redis_errors() + _auth_errors() as exc:
            raise ConfigError(f"cannot use Redis at {self._streams.where}: {exc}") from None
        return self._streams.where

    def _open(self) -> None:
        import redis

        stored = self._streams.redis.hget(self._streams.keys.run, "run_id")
        other = None if stored is None else stored.decode("utf-8", "replace")
        if other is not None and other != self.run_id:  # the same run (a restart) may take its keys back
            raise ConfigError(f"queue {self._spec.queue!r} at {self._streams.where} belongs to run {other}, from "
                              "another output folder: use another --queue (or, if that run is gone for good, "
                              f"delete its keys: fetcher:{self._spec.queue}:*)")
        try:
            self._streams.redis.xgroup_create(self._streams.keys.tasks, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        for entry, field in self._streams.entries(self._streams.keys.tasks):
            try:
                kind, message = wire.load(field)
                self._streams.book.adoptable[wire.task_of(message).url] = entry
            except wire.WireError as exc:
                self._streams.drop(self._streams.keys.tasks, entry, exc)
        for _ in range(1000):  # results an earlier serve left: kept, to finish their URLs when offered
            if not self._streams.read(None):
                break
        self._publish_run()

    def _run_fields(self) -> dict[bytes, bytes]:
        fields = {"protocol": PROTOCOL, "version": __version__, "run_id": self.run_id, "epoch": self.epoch,
                  "state": self._state, "options": wire.dump_rules(self.rules),
                  "lease_timeout": self.lease_timeout, "heartbeat_s": self.heartbeat_s}
        return {name.encode(): str(value).encode() for name, value in fields.items()}

    def _publish_run(self) -> None:
        self._streams.redis.hset(self._streams.keys.run, mapping=self._run_fields())

    def _check_run(self) -> None:
        """The run's description as published, or written again: anything else in it is dropped."""
        streams = self._streams
        stored = streams.redis.hgetall(streams.keys.run)
        if not stored:
            streams.recover()
            self._publish_run()
            return
        fields = self._run_fields()
        wrong = [name for name, value in stored.items() if fields.get(name) != value]
        if not wrong:
            return
        for name in wrong:
            streams.dropped(f"field {name[:64]!r} of {streams.keys.run}", "not what serve published")
        foreign = [name for name in wrong if name not in fields]
        pipe = streams.redis.pipeline(transaction=True)
        if foreign:
            pipe.hdel(streams.keys.run, *foreign)
        pipe.hset(streams.keys.run, mapping=fields)
        pipe.execute()

    # -- the engine's calls ------------------------------------------------------------------

    def offer(self, task: Task) -> None:
        kept = self._streams.book.offer(task)
        if kept is not None:
            self._streams.finished.append(replace(kept, index=task.index))

    def collect(self, timeout: float | None) -> list[Result]:
        now = time.monotonic()
        if now < self._retry_at:
            time.sleep(max(0.0, min(self._retry_at - now, timeout if timeout is not None else 1.0)))
            return self._streams.take()
        try:
            self._streams.place()
            self._push_posts()
            if now >= self._next_tick:
                self._tick(now)
            if self._streams.finished or timeout == 0:
                block = None  # redis-py reads block=0 as "forever"; None does not block
            else:
                block = READ_BLOCK_MS if timeout is None else max(1, min(READ_BLOCK_MS, int(timeout * 1000)))
            self._streams.read(block)
            self._streams.flush_trash()
            if self._down_since is not None:
                self._streams.events.append(f"Redis at {self._streams.where} is back after "
                                            f"{now - self._down_since:.0f} s")
                self._down_since = None
        except redis_errors() as exc:
            self._lost(exc, now)
        return self._streams.take()

    def _lost(self, exc: BaseException, now: float) -> None:
        if self._down_since is None:
            self._down_since = now
            self._streams.events.append(f"lost Redis at {self._streams.where} ({exc}); retrying, workers keep "
                                        "downloading")
        self._retry_at = now + RECONNECT.delay(int(now - self._down_since))  # doubles each second it stays down

    # -- webdataset shards (serve_shards.py) ---------------------------------------------------

    def post(self, worker_id: str, order: dict[str, Any]) -> None:
        self._posts.append((self._streams.keys.mail(worker_id), wire.dump_order({**order, "seq": self._next_seq})))
        self._next_seq += 1

    def _push_posts(self) -> None:
        if self._posts:
            pipe = self._streams.redis.pipeline(transaction=False)
            for key, message in self._posts:
                pipe.rpush(key, message)
            replies = pipe.execute(raise_on_error=False)
            spoilt = {key for (key, _), reply in zip(self._posts, replies) if isinstance(reply, Exception)}
            if spoilt:  # a key of another type where a mailbox goes (WRONGTYPE): not ours, replaced
                for key in spoilt:
                    self._streams.dropped(f"the key {key}", "not a list")
                again = self._streams.redis.pipeline(transaction=False)
                again.delete(*spoilt)
                for key, message in self._posts:
                    if key in spoilt:
                        again.rpush(key, message)
                again.execute()
            self._posts = []

    def take_reports(self) -> list[tuple[str, dict[str, Any]]]:
        reports, self._streams.reports = self._streams.reports, []
        return reports

    def pump(self, timeout: float) -> None:
        """Push the orders, read the results stream (reports) for up to ``timeout``; the engine waits for nothing."""
        now = time.monotonic()
        if now < self._retry_at:
            time.sleep(max(0.0, min(self._retry_at - now, timeout)))
            return
        try:
            self._push_posts()
            if now >= self._next_tick:
                self._tick(now)
            self._streams.read(max(1, min(READ_BLOCK_MS, int(timeout * 1000))))
            self._streams.flush_trash()
        except redis_errors() as exc:
            self._lost(exc, now)

    def publish_shards(self, counts: dict[str, int]) -> None:
        self._shards = dict(counts)

    def room(self) -> int:
        """Free slots of the live workers, less what is in flight (at least one task in flight, as the manager)."""
        capacity = sum(int(w.get("capacity", 0)) for w in self._streams.workers.values())
        return max(capacity - len(self._streams.book), 1 - len(self._streams.book), 0)

    def finish(self, interrupted: bool) -> None:
        self._state = "stopped" if interrupted else "done"
        try:
            self._streams.redis.hset(self._streams.keys.run, "state", self._state)
        except redis_errors():
            pass  # everyone_told() tries again during the linger

    @property
    def running(self) -> bool:
        return self._state == "running"

    def everyone_told(self) -> bool:
        try:  # the whole description, not only the state: a worker must read the epoch beside it
            self._publish_run()
            self._streams.refresh_workers()
        except redis_errors():
            return True  # no Redis: nobody to tell, and no point waiting
        return all(w.get("told") for w in self._streams.workers.values())

    def note_final(self, result: Result) -> None:
        self._final[result.status.value] += 1
        self._streams.book.final(result.url, time.monotonic())

    def take_events(self) -> list[str]:
        events, self._streams.events = self._streams.events, []
        return events

    def stats(self, gone_too: bool = False) -> dict[str, Any]:
        leased = sum(int(w.get("held", 0)) for w in self._streams.workers.values())
        now = time.time()
        rows = [{**wire.worker_row(w, now), "gone": worker_id not in self._streams.workers}
                for worker_id, w in (self._streams.ever if gone_too else self._streams.workers).items()]
        return {"run_id": self.run_id, "epoch": self.epoch, "state": self._state, "total": self.total,
                "final": dict(self._final), "queued": max(0, len(self._streams.book) - leased), "leased": leased,
                "counts": {**self._streams.counts, "dropped": self._dropped(),
                           "leased": sum(int(w.get("leased", 0)) for w in self._streams.ever.values())},
                "lease_timeout": self.lease_timeout,
                "workers": rows, **({"shards": dict(self._shards)} if self._shards else {})}

    def _dropped(self) -> int:
        """Messages dropped here, and by every worker seen (each counts those it read from the tasks stream)."""
        return self._streams.dropped.count + sum(int(w.get("dropped", 0)) for w in self._streams.ever.values())

    def stop(self, completed: bool) -> None:
        """Delete what the run no longer needs: after a completed run, all its keys (workers have been told)."""
        try:
            if completed:  # the journal is closed: it holds every result the engine had
                self._streams.discard_read()
            if completed and self._state == "done":
                keys = self._streams.keys
                self._streams.redis.delete(keys.tasks, keys.results, keys.stats, keys.run,
                                           *self._streams.redis.scan_iter(keys.mail_pattern, count=1000))
        except redis_errors() as exc:
            log.warning("fetcher serve: could not tidy up Redis at %s: %s", self._streams.where, exc)
        finally:
            self._streams.redis.close()

    # -- inside collect ----------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        self._next_tick = now + TICK_S
        self._check_run()
        self._streams.refresh_workers()
        if not self._streams.reap():  # emptied since _check_run read the run's description
            self._streams.recover()
            self._publish_run()
        self._streams.redis.set(self._streams.keys.stats, json.dumps(self.stats()))


def _auth_errors() -> tuple[type[BaseException], ...]:
    from fetcher.distributed.redis.common import auth_errors

    return auth_errors()

