"""The Coordinator's lease book, driven directly with a fake clock: no sockets, no processes."""

from __future__ import annotations

import pickle

import pytest

from fetcher import __version__
from fetcher.distributed.manager.coordinator import Coordinator
from fetcher.distributed.protocol import PROTOCOL, Finished, Grant, Refusal, Wait, Welcome, WorkerInfo
from fetcher.models import ErrorKind, Result, Status, FetchTask, failed
from fetcher.distributed.protocol import RunRules
from fetcher.options import Options


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def coord(clock, tmp_path) -> Coordinator:
    rules = RunRules(Options.create(out=str(tmp_path)).worker_form())
    return Coordinator(rules, "run1", epoch=7, lease_timeout=10.0, clock=clock)


def task(i: int) -> FetchTask:
    return FetchTask(url=f"http://h{i % 3}.example/f{i}", name=f"f{i}", index=i)


def ok(t: FetchTask) -> Result:
    return Result(url=t.url, status=Status.OK, path=t.name, bytes=10, index=t.index)


def join(coord: Coordinator, worker_id: str, capacity: int = 10) -> None:
    info = WorkerInfo(worker_id, "host", 1, f"/out/{worker_id}", "thread", capacity, capacity)
    assert isinstance(coord.hello(PROTOCOL, __version__, info), Welcome)


def test_lease_complete_collect_in_batches(coord):
    join(coord, "w1")
    for i in range(5):
        coord.offer(task(i))
    grant = coord.lease("w1", 3)
    assert isinstance(grant, Grant) and [t.index for _, t in grant.leases] == [0, 1, 2]
    assert coord.complete("w1", [(lease, ok(t)) for lease, t in grant.leases]) == 3
    results = coord.collect(0)
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].extra["worker"] == {"id": "w1", "host": "host", "out": "/out/w1"}
    assert isinstance(coord.lease("w1", 10), Grant)
    assert isinstance(coord.lease("w1", 10), Wait)


def test_expired_lease_is_handed_out_again_and_heartbeats_keep_leases(coord, clock):
    join(coord, "w1")
    join(coord, "w2")
    coord.offer(task(0))
    coord.offer(task(1))
    first = coord.lease("w1", 2)
    clock.now += 6
    assert coord.heartbeat("w1", [first.leases[0][0]]) == []  # keeps only the first alive
    clock.now += 6
    again = coord.lease("w2", 5)
    assert [t.index for _, t in again.leases] == [1]  # the unrenewed one
    assert coord.heartbeat("w1", [lease for lease, _ in first.leases]) == [first.leases[1][0]]
    assert coord.stats()["counts"]["expired"] == 1


def test_a_late_duplicate_completion_changes_nothing(coord, clock):
    join(coord, "w1")
    join(coord, "w2")
    t = task(0)
    coord.offer(t)
    (lease1, _), = coord.lease("w1", 1).leases
    clock.now += 11  # w1 went silent: its lease expires
    (lease2, _), = coord.lease("w2", 1).leases
    assert coord.complete("w2", [(lease2, ok(t))]) == 1
    first = coord.collect(0)
    # w1 comes back and reports the same URL, as a success and as a failure: both ignored.
    assert coord.complete("w1", [(lease1, ok(t))]) == 0
    assert coord.complete("w1", [(lease1, failed(t, ErrorKind.TIMEOUT, "slow"))]) == 0
    assert coord.collect(0) == []
    assert len(first) == 1 and first[0].extra["worker"]["id"] == "w2"
    assert coord.stats()["counts"]["duplicates"] == 2


def test_a_failure_counts_only_from_the_current_lease_but_a_success_from_any(coord, clock):
    join(coord, "w1")
    join(coord, "w2")
    a, b = task(0), task(1)
    coord.offer(a)
    coord.offer(b)
    old = dict((t.url, lease) for lease, t in coord.lease("w1", 2).leases)
    clock.now += 11
    coord.lease("w2", 2)  # both re-leased to w2
    assert coord.complete("w1", [(old[a.url], failed(a, ErrorKind.TIMEOUT, "x"))]) == 0  # stale failure
    assert coord.complete("w1", [(old[b.url], ok(b))]) == 1  # a success is final whoever made it
    assert [r.url for r in coord.collect(0)] == [b.url]
    assert coord.stats()["leased"] == 1  # w2's lease on b was dropped with it


def test_release_puts_leases_back_at_the_front(coord):
    join(coord, "w1")
    join(coord, "w2")
    for i in range(3):
        coord.offer(task(i))
    grant = coord.lease("w1", 2)
    assert coord.release("w1", [lease for lease, _ in grant.leases], True) == 2
    assert [t.index for _, t in coord.lease("w2", 3).leases] == [1, 0, 2]


def test_success_for_a_url_not_yet_offered_finishes_it_when_offered(coord):
    """After a server restart, workers resend results for URLs the new run has not read yet."""
    join(coord, "w1")
    t = task(4)
    assert coord.complete("w1", [(12345, ok(t))]) == 0
    coord.offer(t)
    (result,) = coord.collect(0)
    assert result.url == t.url and result.index == 4 and result.extra["worker"]["id"] == "w1"
    assert isinstance(coord.lease("w1", 5), Wait)  # never leased


def test_room_follows_free_worker_slots(coord, clock):
    assert coord.room() == 1  # no worker: one task queued so the engine reads on
    coord.offer(task(0))
    assert coord.room() == 0
    join(coord, "w1", capacity=4)
    assert len(coord.lease("w1", 4).leases) == 1  # it asked for 4, got 1: 3 free slots
    assert coord.room() == 3
    coord.offer(task(1))
    assert coord.room() == 2
    clock.now += 60  # w1 silent far longer than a worker's call interval: its slots no longer count
    assert coord.room() == 0


def test_finished_after_the_run_and_everyone_told(coord):
    join(coord, "w1")
    join(coord, "w2")
    assert not coord.everyone_told()
    coord.finish(interrupted=False)
    assert coord.lease("w1", 1) == Finished(False)
    assert not coord.everyone_told()
    assert coord.heartbeat("w2", []) == Finished(False)
    assert coord.everyone_told()


def test_stop_says_interrupted_and_refuses_late_results(coord):
    join(coord, "w1")
    coord.offer(task(0))
    (lease, t), = coord.lease("w1", 1).leases
    coord.finish(interrupted=True)
    assert coord.lease("w1", 1) == Finished(True)
    assert coord.complete("w1", [(lease, ok(t))]) == 0


def test_hello_refuses_another_version(coord):
    info = WorkerInfo("w", "h", 1, "/o", "thread", 1, 1)
    assert isinstance(coord.hello(PROTOCOL, "0.0.0-other", info), Refusal)
    assert isinstance(coord.hello(PROTOCOL + 1, __version__, info), Refusal)


def test_messages_pickle_by_value():
    t = FetchTask(url="http://h/x", name="x", index=3, attempt=2, checksum="sha256:ab", meta={"k": [1]},
             provisional_name=True)
    r = failed(t, ErrorKind.HTTP_STATUS, "HTTP 503", retryable=True, retry_after=2.0, http_status=503)
    grant = Grant([(1, t)], 10.0)
    assert pickle.loads(pickle.dumps(grant)) == grant
    assert pickle.loads(pickle.dumps([(1, r)])) == [(1, r)]


def test_after_a_restart_a_worker_keeps_the_downloads_it_still_runs(coord, clock):
    """Lease ids carry the old epoch, so they stay unique: the new server takes them over."""
    join(coord, "w1")
    join(coord, "w2")
    a, b = task(0), task(1)
    coord.offer(a)  # read from the journal again before w1 is back: queued
    assert coord.adopt("w1", [(900, a.url), (901, b.url)]) == 1
    coord.offer(b)  # read later: leased to w1 at once
    assert isinstance(coord.lease("w2", 5), Wait)  # nothing for w2: both are w1's
    clock.now += 6
    assert coord.heartbeat("w1", [900, 901]) == []  # the old ids are renewed like any lease
    assert coord.complete("w1", [(901, failed(b, ErrorKind.TIMEOUT, "slow"))]) == 1  # its lease: a failure counts
    assert coord.complete("w1", [(900, ok(a))]) == 1
    assert sorted(r.index for r in coord.collect(0)) == [0, 1]


def test_a_claim_lapses_after_a_lease_timeout(coord, clock):
    join(coord, "w1")
    join(coord, "w2")
    t = task(0)
    coord.adopt("w1", [(900, t.url)])
    clock.now += 11
    coord.offer(t)
    assert [u.url for _, u in coord.lease("w2", 5).leases] == [t.url]
