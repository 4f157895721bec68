"""The broker contract, in one process: each broker's serve side and worker sessions, same assertions.

The serve side is driven as the RemoteBackend drives it (offer, collect,
finish); workers are WorkerSessions. Leases expire on real clocks here (the
Redis broker's are Redis's), so the lease timeout is a fraction of a second
and every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from cluster import KEY, wait_until
from redis_helper import RedisServer

from fetcher.distributed.broker import ManagerSpec, RedisSpec, ServeBroker, WorkerSession
from fetcher.distributed.brokers import serve_broker, worker_sessions
from fetcher.distributed.protocol import Finished, Grant, Wait, Welcome, WorkerInfo, parse_address
from fetcher.models import ErrorKind, Result, Status, failed
from fetcher.models import FetchTask as Task
from fetcher.distributed.protocol import RunRules
from fetcher.options import Options

LEASE_S = 0.6


@pytest.fixture(params=["manager", "redis"])
def spec(request, tmp_path) -> Iterator[object]:
    if request.param == "manager":
        yield ManagerSpec(("127.0.0.1", 0), KEY.encode())
        return
    redis = RedisServer(tmp_path / "redis").start()
    try:
        yield RedisSpec(redis.url, "contract")
    finally:
        redis.stop()


@pytest.fixture
def broker(spec, tmp_path) -> Iterator[tuple[ServeBroker, object]]:
    rules = RunRules(Options.create(out=str(tmp_path / "srv")).worker_form())
    serve_side = serve_broker(spec, rules, "run1", 7, LEASE_S, None)
    where = serve_side.start()
    worker_spec = ManagerSpec(parse_address(where), KEY.encode()) if isinstance(spec, ManagerSpec) else spec
    try:
        yield serve_side, worker_spec
    finally:
        serve_side.stop(completed=False)


def join(worker_spec, worker_id: str, capacity: int = 10) -> WorkerSession:
    session = worker_sessions(worker_spec)(5.0)
    info = WorkerInfo(worker_id, "host", 1, f"/out/{worker_id}", "thread", capacity, capacity)
    welcome = session.hello(info, [])
    assert isinstance(welcome, Welcome) and welcome.run_id == "run1" and welcome.epoch == 7
    return session


def task(i: int) -> Task:
    return Task(url=f"http://h{i % 3}.example/f{i}", name=f"f{i}", index=i)


def ok(t: Task) -> Result:
    return Result(url=t.url, status=Status.OK, path=t.name, bytes=10, index=t.index)


def lease_some(serve_side: ServeBroker, session: WorkerSession, worker_id: str, n: int) -> Grant:
    """Lease until something comes (the Redis serve side adds offered tasks on its next collect)."""
    def granted() -> Grant | None:
        serve_side.collect(0)
        reply = session.lease(worker_id, n)
        return reply if isinstance(reply, Grant) else None
    return wait_until(granted, timeout=10, what="a grant")


def collect_all(serve_side: ServeBroker, count: int) -> list[Result]:
    results: list[Result] = []
    wait_until(lambda: results.extend(serve_side.collect(0.05)) or len(results) >= count, timeout=10,
               what=f"{count} results")
    return results


def test_lease_complete_collect_in_batches(broker):
    serve_side, worker_spec = broker
    w1 = join(worker_spec, "w1")
    for i in range(5):
        serve_side.offer(task(i))
    grant = lease_some(serve_side, w1, "w1", 3)
    assert sorted(t.index for _, t in grant.leases) == [0, 1, 2]
    w1.complete("w1", [(lease, ok(t)) for lease, t in grant.leases])
    results = collect_all(serve_side, 3)
    assert sorted(r.index for r in results) == [0, 1, 2]
    assert results[0].extra["worker"] == {"id": "w1", "host": "host", "out": "/out/w1"}
    rest = lease_some(serve_side, w1, "w1", 10)
    assert sorted(t.index for _, t in rest.leases) == [3, 4]
    assert isinstance(w1.lease("w1", 10), Wait)
    w1.close()


def test_an_expired_lease_goes_to_another_worker_and_heartbeats_keep_leases(broker):
    serve_side, worker_spec = broker
    w1, w2 = join(worker_spec, "w1"), join(worker_spec, "w2")
    serve_side.offer(task(0))
    serve_side.offer(task(1))
    first = lease_some(serve_side, w1, "w1", 2)
    kept = next(lease for lease, t in first.leases if t.index == 0)
    deadline = time.monotonic() + 3 * LEASE_S
    again: list = []
    while time.monotonic() < deadline and not again:  # w1 renews only task 0
        assert w1.heartbeat("w1", [kept]) == []
        serve_side.collect(0.05)
        reply = w2.lease("w2", 5)
        if isinstance(reply, Grant):
            again = reply.leases
    assert [t.index for _, t in again] == [1]  # the unrenewed one, and only it
    assert w1.heartbeat("w1", [lease for lease, _ in first.leases]) == [
        lease for lease, t in first.leases if t.index == 1]
    assert serve_side.stats()["counts"]["expired"] == 1


def test_the_first_completion_wins(broker):
    serve_side, worker_spec = broker
    w1, w2 = join(worker_spec, "w1"), join(worker_spec, "w2")
    t = task(0)
    serve_side.offer(t)
    (lease, _), = lease_some(serve_side, w1, "w1", 1).leases
    w1.complete("w1", [(lease, ok(t))])
    w2.complete("w2", [(lease, failed(t.url, ErrorKind.TIMEOUT, "late"))])
    results = collect_all(serve_side, 1)
    time.sleep(0.2)
    results += serve_side.collect(0.05)
    assert [r.status for r in results] == [Status.OK]
    assert serve_side.stats()["counts"]["duplicates"] == 1


def test_a_late_failure_from_an_expired_lease_changes_nothing(broker):
    serve_side, worker_spec = broker
    w1, w2 = join(worker_spec, "w1"), join(worker_spec, "w2")
    t = task(0)
    serve_side.offer(t)
    (old, _), = lease_some(serve_side, w1, "w1", 1).leases
    (new, _), = wait_until(lambda: serve_side.collect(0.05) or _grant(w2.lease("w2", 1)), timeout=10,
                           what="the lease handed out again").leases
    assert new != old
    w1.complete("w1", [(old, failed(t.url, ErrorKind.TIMEOUT, "too late"))])
    w2.complete("w2", [(new, ok(t))])
    assert [r.status for r in collect_all(serve_side, 1)] == [Status.OK]


def _grant(reply: object) -> Grant | None:
    return reply if isinstance(reply, Grant) else None


def test_released_leases_go_back_at_once(broker):
    serve_side, worker_spec = broker
    w1, w2 = join(worker_spec, "w1"), join(worker_spec, "w2")
    serve_side.offer(task(0))
    grant = lease_some(serve_side, w1, "w1", 1)
    assert w1.release("w1", [lease for lease, _ in grant.leases], True) == 1
    again = lease_some(serve_side, w2, "w2", 1)
    assert [t.index for _, t in again.leases] == [0]
    assert serve_side.stats()["counts"]["released"] == 1
    assert any("left, returning" in line for line in serve_side.take_events())


def test_finish_tells_every_worker(broker):
    serve_side, worker_spec = broker
    w1 = join(worker_spec, "w1")
    serve_side.offer(task(0))
    grant = lease_some(serve_side, w1, "w1", 1)
    serve_side.finish(interrupted=True)
    assert w1.lease("w1", 1) == Finished(True)
    assert w1.heartbeat("w1", [lease for lease, _ in grant.leases]) == Finished(True)
    assert wait_until(serve_side.everyone_told, timeout=5, what="every worker told")


def test_stats_name_the_workers(broker):
    serve_side, worker_spec = broker
    w1 = join(worker_spec, "w1", capacity=4)
    serve_side.offer(task(0))
    lease_some(serve_side, w1, "w1", 1)
    stats = wait_until(lambda: serve_side.collect(0) or w1.stats()["workers"] and w1.stats(), timeout=10,
                       what="stats with a worker")
    assert stats["run_id"] == "run1" and [w["id"] for w in stats["workers"]] == ["w1"]
    assert 1 <= serve_side.room() <= 3  # 4 slots, 1 task in flight
    for i in range(1, 5):  # 4 more, not leased: with the one in flight, more than the worker's slots
        serve_side.offer(task(i))
    wait_until(lambda: serve_side.collect(0) or serve_side.room() == 0, timeout=10, what="no room left")



def _lose_the_next_reply(session: WorkerSession) -> None:
    """The next call is carried out by the broker, and its reply lost on the way (a LinkError here)."""
    import redis

    from fetcher.distributed.manager.broker import ManagerSession
    from fetcher.errors import LinkError

    if isinstance(session, ManagerSession):
        link, call = session._link, session._link.call

        def lost(*args):
            link.call = call
            call(*args)
            raise LinkError("the reply was lost")
        link.call = lost
        return
    client, pipeline = session._redis, session._redis.pipeline

    def lossy(*args, **kwargs):
        client.pipeline = pipeline
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        def lost(*a, **k):
            execute(*a, **k)
            raise redis.ConnectionError("the reply was lost")
        pipe.execute = lost
        return pipe
    client.pipeline = lossy


def test_shard_orders_survive_a_lost_reply_and_each_is_read_once(broker):
    """Orders leave a worker's mailbox only after a reply that carried them arrived (both brokers); the
    worker carries out each seq once (shard_worker.py), so reading some twice is harmless, losing one is not."""
    from fetcher.distributed.calls import check_order, seen_before
    from fetcher.errors import LinkError

    serve_side, worker_spec = broker
    w1 = join(worker_spec, "w1")
    _post(serve_side, 1, 2, 3)
    _lose_the_next_reply(w1)
    with pytest.raises(LinkError):
        w1.exchange("w1", [], 0)
    orders = [check_order(o) for o in w1.exchange("w1", [], 0)]
    assert [o["shard"] for o in orders] == [1, 2, 3]  # none lost with the reply
    seqs = [o["seq"] for o in orders]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    seen = seqs[-1]
    _post(serve_side, 4)
    again = [check_order(o) for o in w1.exchange("w1", [], seen)]
    assert [o["shard"] for o in again if not seen_before(o["seq"], seen)] == [4]
    seen = again[-1]["seq"]
    assert w1.exchange("w1", [], seen) == []  # everything read and said seen: the mailbox is empty
    w1.close()


def _post(serve_side: ServeBroker, *shards: int) -> None:
    """Shard orders (seals) for w1, pushed (the Redis serve side pushes its orders on pump)."""
    for shard in shards:
        serve_side.post("w1", {"op": "seal", "shard": shard, "token": f"7.{shard}.x", "count": 1})
    serve_side.pump(0.01)


def _read(session: WorkerSession) -> list[int]:
    """The shards of the orders w1's next exchange brings."""
    from fetcher.distributed.calls import check_order

    return [check_order(o)["shard"] for o in session.exchange("w1", [], 0)]


@pytest.fixture
def redis_mailbox(tmp_path) -> Iterator[tuple[ServeBroker, WorkerSession]]:
    """A Redis serve side and worker w1's session, for the mailbox's Redis-only corners."""
    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        spec = RedisSpec(redis_server.url, "mailbox")
        rules = RunRules(Options.create(out=str(tmp_path / "srv")).worker_form())
        serve_side = serve_broker(spec, rules, "run1", 7, LEASE_S, None)
        serve_side.start()
        w1 = join(spec, "w1")
        yield serve_side, w1
        w1.close()
        serve_side.stop(completed=False)
    finally:
        redis_server.stop()


def test_the_redis_mailbox_removes_what_was_read_and_nothing_else(redis_mailbox):
    """Entries leave the Redis list by their exact text after the reply that carried them: when Redis lost
    the list between two calls (a restart without persistence), the orders posted after are all read;
    a MULTI that failed is sent again with the same removals."""
    from fetcher.errors import LinkError

    serve_side, w1 = redis_mailbox
    _post(serve_side, 1, 2, 3)
    assert _read(w1) == [1, 2, 3]
    w1._redis.delete("fetcher:mailbox:mail:w1")  # Redis lost the list (restarted, say)
    _post(serve_side, 4, 5)
    assert _read(w1) == [4, 5]  # before: the trim by count took these two, unread
    _post(serve_side, 6)
    _lose_the_next_reply(w1)
    with pytest.raises(LinkError):
        w1.exchange("w1", [], 0)  # 4 and 5 removed, the reply with 6 lost
    assert _read(w1) == [6]
    assert _read(w1) == []


def test_a_mailbox_key_of_another_type_is_replaced_on_both_sides(redis_mailbox):
    """A Redis user's SET where a worker's mailbox goes: the worker's exchange and serve's push each
    answered WRONGTYPE for ever (the worker reconnected ~12 times a second, serve crashed). Now the key
    is dropped, logged, and the mailbox works again."""
    serve_side, w1 = redis_mailbox
    key = "fetcher:mailbox:mail:w1"
    w1._redis.set(key, b"not a list")
    assert w1.exchange("w1", [], 0) == []  # dropped: no LinkError
    _post(serve_side, 1)
    assert _read(w1) == [1]
    w1._redis.set(key, b"not a list")
    _post(serve_side, 2)  # serve's push meets the string: replaced
    assert _read(w1) == [2]
    assert w1._dropped.count >= 1
