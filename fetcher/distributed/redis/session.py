"""A worker's session with the Redis broker: the lease protocol on Redis Streams.

- ``lease``: ``XREADGROUP COUNT n`` on the tasks stream, as this worker's
  consumer; blocking briefly (``BLOCK`` well under the socket timeout) only
  when the worker holds nothing. Each entry id is the lease id.
- ``heartbeat``: ``XCLAIM ... JUSTID`` of the ids it holds, to itself: resets
  their idle time without counting a delivery. An id that does not come back
  is no longer held (``serve`` reclaimed it after ``--lease-timeout``, or
  took another worker's result for it).
- ``complete``: the results ``XADD``-ed to the results stream (a batch per
  entry) and their leases ``XACK``-ed, in one MULTI: a result is never
  acknowledged without being sent.
- ``release``: a ``release`` message per lease; ``serve`` puts them back.

Every call carries the run's state (``HGET run state``), so a worker hears
that the run is over on its next call, and renews its own ``worker:ID`` key,
which tells ``serve`` it is alive and how many slots it has.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fetcher.distributed.redis import wire
from fetcher.distributed.broker import RedisSpec, WorkerSession
from fetcher.distributed.protocol import PROTOCOL, Finished, Grant, LeaseId, Refusal, Wait, Welcome, WorkerInfo
from fetcher.distributed.dropped import Dropped
from fetcher.distributed.redis.common import (GROUP, MAX_BLOCK_MS, MESSAGE, Keys, auth_errors, connect, display,
                                              entry_id, message_of, redis_errors)
from fetcher.errors import AuthError, LinkError

if TYPE_CHECKING:
    from fetcher.models import FetchTask as Task
    from fetcher.models import Result

log = logging.getLogger("fetcher.distributed")
BUSY_BLOCK_MS = 50  # while downloads run: results wait at most this long for the loop to send them


class RedisSession(WorkerSession):
    """One worker's connection to the Redis broker (also used by ``fetcher status``)."""

    def __init__(self, spec: RedisSpec, timeout: float) -> None:
        self._spec = spec
        self._keys = Keys(spec.queue)
        self._timeout = timeout
        self._block_ms = max(10, min(MAX_BLOCK_MS, int(timeout * 1000 / 4)))
        self._where = display(spec.url)
        self._info: WorkerInfo | None = None
        self._live_s = 10.0
        self._lease_timeout = 60.0
        self._held = 0
        self._done = 0
        self._leased = 0  # entries read in all: serve's "leases handed out", as the manager counts them
        self._epoch = ""
        self._told = False
        self._read_mail: list[bytes] = []  # the mailbox's entries read last time, carried out since
        self._dropped = Dropped(log, "fetcher work")
        with self._translated():
            self._redis = connect(spec, timeout)
            self._redis.ping()

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """redis-py's errors as LinkError (try again) or AuthError (exit 2), in one place."""
        import redis

        try:
            yield
        except auth_errors() as exc:
            raise AuthError(f"Redis at {self._where} refused this user or password ({exc}): set "
                            "FETCHER_REDIS_PASSWORD or --redis-password-file, and the user in the URL") from None
        except redis.TimeoutError:
            raise LinkError(f"Redis at {self._where} did not answer within {self._timeout:g} s") from None
        except redis_errors() as exc:
            raise LinkError(f"no connection to Redis at {self._where}: {exc}") from None
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc).lower():
                raise LinkError(f"the run's streams are gone from Redis at {self._where} "
                                "(emptied or restarted); waiting for serve to put them back") from None
            raise LinkError(f"Redis at {self._where} answered with an error: {exc}") from None

    def hello(self, info: WorkerInfo, holding: list[tuple[LeaseId, str]]) -> Welcome | Refusal:
        from fetcher import __version__

        with self._translated():
            run = self._run(self._redis.hgetall(self._keys.run))
        # A stopped run's serve may start again; a field dropped as garbage is written again by serve.
        if not run.keys() >= {"epoch", "protocol", "version"} or run.get("state") != "running":
            raise LinkError(f"no `fetcher serve --queue {self._spec.queue}` is running at {self._where} yet")
        if run.get("protocol") != str(PROTOCOL) or run.get("version") != __version__:
            return Refusal(f"the server runs fetcher {run.get('version')} (protocol {run.get('protocol')}) and "
                           f"this worker fetcher {__version__} (protocol {PROTOCOL}): install the same version on both")
        try:
            rules = wire.rules_of(run.get("options", ""))
            welcome = Welcome(run.get("run_id", "?"), int(run["epoch"]), rules, float(run["lease_timeout"]),
                              float(run["heartbeat_s"]))
        except (wire.WireError, ValueError, KeyError) as exc:  # serve writes it again within a tick
            self._dropped(f"the run description in {self._keys.run}", exc)
            raise LinkError(f"the run description at {self._where} (queue {self._spec.queue}) cannot be read: "
                            "waiting for serve to write it again (is another program using this queue's keys?)"
                            ) from None
        self._info, self._lease_timeout, self._epoch = info, welcome.lease_timeout, run["epoch"]
        self._live_s = max(3 * welcome.heartbeat_s, 3.0)
        self._held = len(holding)  # still pending to this consumer in the group: nothing to claim back
        with self._translated():
            self._alive(self._redis)
        return welcome

    def _alive(self, pipe: Any) -> None:
        """Renew this worker's key: alive, its slots, whether it heard that the run is over."""
        assert self._info is not None
        pipe.set(self._keys.worker(self._info.id), wire.dump_worker(self._info, {
            "held": self._held, "done": self._done, "leased": self._leased, "told": self._told,
            "at": round(time.time(), 1),
            "dropped": self._dropped.count}), ex=max(1, round(self._live_s)))

    def _run(self, stored: Any) -> dict[str, str]:
        """The run hash's fields as text; a field that is not UTF-8 is dropped (serve writes the run's again)."""
        run: dict[str, str] = {}
        for name, value in (stored or {}).items():
            try:
                run[wire.text_of(name, 64)] = wire.text_of(value)
            except wire.WireError as exc:
                self._dropped(f"a field of {self._keys.run}", exc)
        return run

    def _state(self, value: Any) -> Finished | None:
        """Finished once the run is over; LinkError if another serve took over (a restart: say hello again)."""
        state, epoch = value if isinstance(value, list) and len(value) == 2 else (None, None)
        # Each field on its own: garbage in one must not hide the other (a "done" beside a damaged epoch).
        # serve writes the run's description again within a tick; until then, carry on.
        if epoch is not None and not epoch.isdigit():
            self._dropped(f"the run's epoch in {self._keys.run}", f"{epoch!r:.80}")
            epoch = None
        if state not in (None, b"running", b"done", b"stopped"):
            self._dropped(f"the run's state in {self._keys.run}", f"{state!r:.80}")
            state = None
        if epoch is not None and epoch.decode() != self._epoch:
            raise LinkError(f"the server at {self._where} started again (a new epoch)")
        if state in (None, b"running"):
            return None
        self._told = True
        return Finished(state == b"stopped")

    def lease(self, worker_id: str, n: int) -> Grant | Wait | Finished:
        with self._translated():  # the run's state first: entries read are leased, so read only while it runs
            pipe = self._redis.pipeline(transaction=False)
            pipe.hmget(self._keys.run, ["state", "epoch"])
            self._alive(pipe)
            state = pipe.execute()[0]
        if state[0] is None:  # Redis emptied (serve puts them back within a second), or the run ended and is gone
            raise LinkError(f"the run's keys are gone from Redis at {self._where}; waiting for serve")
        if (ended := self._state(state)) is not None:
            with self._translated():
                self._alive(self._redis)
            return ended
        with self._translated():  # blocking briefly, so a free slot gets its task as soon as serve adds it
            entries = self._redis.xreadgroup(GROUP, worker_id, {self._keys.tasks: ">"}, count=max(1, n),
                                             block=min(BUSY_BLOCK_MS, self._block_ms) if self._held else self._block_ms)
        leases = self._tasks(entries)
        self._held += len(leases)
        self._leased += len(leases)
        return Grant(leases, self._lease_timeout) if leases else Wait(0.0)  # the read waited already

    def _tasks(self, entries: Any) -> list[tuple[LeaseId, Task]]:
        leases: list[tuple[LeaseId, Task]] = []
        foreign = []
        for _stream, items in entries or []:
            for raw_id, fields in items:
                entry = entry_id(raw_id)
                try:
                    kind, message = wire.load(message_of(fields))
                    if kind != "task":
                        raise wire.WireError(f"a {kind!r} message in the tasks stream")
                    leases.append((entry, wire.task_of(message)))
                except wire.WireError as exc:
                    self._dropped(f"entry {entry} of {self._keys.tasks}", exc)
                    foreign.append(entry)
        if foreign:
            with self._translated():
                self._redis.xack(self._keys.tasks, GROUP, *foreign)
        return leases

    def heartbeat(self, worker_id: str, lease_ids: list[LeaseId]) -> list[LeaseId] | Finished:
        self._held = len(lease_ids)
        with self._translated():
            pipe = self._redis.pipeline(transaction=False)
            pipe.hmget(self._keys.run, ["state", "epoch"])
            self._alive(pipe)
            if lease_ids:
                pipe.xclaim(self._keys.tasks, GROUP, worker_id, 0, [str(i) for i in lease_ids], justid=True)
            replies = pipe.execute(raise_on_error=False)
        if (ended := self._state(replies[0])) is not None:
            with self._translated():
                self._alive(self._redis)
            return ended
        claimed = replies[2] if lease_ids and isinstance(replies[2], list) else []
        kept = {entry_id(entry) for entry in claimed}
        return [lease for lease in lease_ids if str(lease) not in kept]

    def complete(self, worker_id: str, items: list[tuple[LeaseId, Result]]) -> int:
        assert self._info is not None
        with self._translated():
            pipe = self._redis.pipeline(transaction=True)
            pairs = [(str(lease), result) for lease, result in items]
            for start in range(0, len(pairs), wire.RESULTS_PER_ENTRY):
                chunk = pairs[start:start + wire.RESULTS_PER_ENTRY]
                pipe.xadd(self._keys.results, {MESSAGE: wire.dump_results(self._info, chunk)})
            pipe.xack(self._keys.tasks, GROUP, *[lease for lease, _ in pairs])
            replies = pipe.execute(raise_on_error=False)
        acked = replies[-1] if isinstance(replies[-1], int) else 0
        self._done += len(items)
        self._held = max(0, self._held - len(items))
        return int(acked)

    def release(self, worker_id: str, lease_ids: list[LeaseId], leaving: bool) -> int:
        assert self._info is not None
        with self._translated():
            pipe = self._redis.pipeline(transaction=True)
            for lease in lease_ids:
                pipe.xadd(self._keys.results, {MESSAGE: wire.dump_release(self._info, str(lease), leaving)})
            if leaving:
                pipe.delete(self._keys.worker(worker_id))
            pipe.execute()
        return len(lease_ids)

    def exchange(self, worker_id: str, reports: list[dict[str, Any]], seen: int) -> list[dict[str, Any]]:
        """Reports into the results stream, and this worker's mailbox read, in one MULTI.

        The entries read last time (all carried out or dropped by now) are removed in the
        same MULTI, each by its exact text (LREM: every order's text is unique, its seq is in
        it), so an entry leaves the list only after a reply that carried it arrived, and
        removing one twice, or after Redis lost the list, removes nothing else. A MULTI
        that failed is sent again with the same removals; orders read twice are carried
        out once (shard_worker.py), so ``seen`` is not needed here.
        """
        assert self._info is not None
        key = self._keys.mail(worker_id)
        with self._translated():
            pipe = self._redis.pipeline(transaction=True)
            for text in self._read_mail:
                pipe.lrem(key, 1, text)
            if reports:
                pipe.xadd(self._keys.results, {MESSAGE: wire.dump_reports(self._info, reports)})
            pipe.lrange(key, 0, -1)
            replies = pipe.execute(raise_on_error=False)  # a MULTI runs every command, whatever one answers
            if reports and isinstance(replies[-2], Exception):
                raise replies[-2]  # the reports did not go: sent again on the next call
        if isinstance(replies[-1], Exception):  # the mailbox key is of another type (WRONGTYPE): not ours
            self._dropped(f"the key {key}", "not a list of orders: deleted")
            with self._translated():
                self._redis.delete(key)
            self._read_mail = []
            return []
        texts = replies[-1] if isinstance(replies[-1], list) else []
        self._read_mail = [text for text in texts if isinstance(text, bytes)]  # the caller handles every one
        orders = []
        for text in texts:
            try:
                kind, message = wire.load(text)
                if kind != "order":
                    raise wire.WireError(f"a {kind!r} message in a worker's mailbox")
                orders.append(wire.order_of(message))
            except wire.WireError as exc:
                self._dropped(f"a message of {self._keys.mail(worker_id)}", exc)
        return orders

    def stats(self) -> dict[str, Any]:
        import json

        with self._translated():
            text = self._redis.get(self._keys.stats)
            workers = [self._redis.get(key) for key in self._redis.scan_iter(self._keys.worker_pattern, count=1000)]
        if text is None:
            raise LinkError(f"no `fetcher serve --queue {self._spec.queue}` is running at {self._where}")
        try:
            stats: dict[str, Any] = json.loads(wire.text_of(text))
            if not isinstance(stats, dict) or not isinstance(stats.get("counts"), dict):
                raise wire.WireError("not serve's counters")
        except (ValueError, RecursionError) as exc:  # serve writes them again within a tick
            raise LinkError(f"the run's counters at {self._where} cannot be read ({exc}); try again") from None
        stats["workers"] = [w for w in map(_worker_row, workers) if w is not None]
        return stats

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._redis.close()



def _worker_row(text: object) -> dict[str, Any] | None:
    try:
        return wire.worker_row(wire.worker_of(text), time.time())
    except wire.WireError:
        return None
