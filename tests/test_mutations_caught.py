"""Tests that fail when one line of a promise is broken (issue 24's mutations), and promises that had no test.

Each mutation named in a test's docstring left every test file green on 28b5069:
- journal.py: commits with ``synchronous=NORMAL`` instead of FULL;
- guards.py: the refusal of a declared Content-Length over ``--max-size`` before reading disabled;
- guards.py: ``>`` turned into ``>=`` in the size cap (a body of exactly ``--max-size`` refused);
- leases.py: ``renew`` not checking which worker holds the lease.
"""

from __future__ import annotations

import os
import stat

import pytest
from cluster import Cluster, cluster_on, manifest, wait_until
from conftest import CLIENTS, write_list
from redis_helper import RedisServer
from test_distributed_coordinator import Clock, join, task

from fetcher.cli.main import main
from fetcher.distributed.manager.coordinator import Coordinator
from fetcher.distributed.protocol import Grant, RunRules
from fetcher.options import Options
from fetcher.run.journal import Journal, journal_path


# -- journal durability ---------------------------------------------------------------------


@pytest.mark.parametrize(("level", "expected"), [("full", 2), ("batch", 2), ("none", 1)])
def test_the_journal_syncs_every_commit_unless_durability_is_none(tmp_path, level, expected):
    """Mutation: ``synchronous=NORMAL`` whatever the level (a commit in WAL mode then waits for the
    checkpoint to reach the disk: a power loss takes the rows a run already reported as done)."""
    journal = Journal(str(tmp_path))
    try:
        journal.start_run(durability=level)
        journal.commit()
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == expected  # 2 FULL, 1 NORMAL
    finally:
        journal.close()
    assert os.path.exists(journal_path(str(tmp_path)))


# -- size caps --------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_declared_length_over_max_size_is_refused_before_reading(server, out, tmp_path, capsys, client):
    """Mutation: the pre-read refusal disabled (guards.py): the body is then read up to the cap, and
    the failure says 'body is over' instead of naming the Content-Length."""
    url = server.url("/files/declared.bin?size=200000")
    assert main([write_list(tmp_path, [url]), "-o", out, "--max-size", "5000", "--client", client, "-q"]) == 1
    error = manifest(out)[url]["error"]
    assert error["kind"] == "too-large" and error["message"] == "Content-Length 200000 is over --max-size 5000"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("route", ["files", "chunked"])  # declared length, and none (counted as it comes)
def test_a_body_of_exactly_max_size_is_kept_and_one_byte_more_is_refused(server, tmp_path, client, route):
    """Mutation: ``>=`` for ``>`` in the size cap (guards.py): a body of exactly --max-size refused."""
    exact, over = server.url(f"/{route}/exact.bin?size=5000"), server.url(f"/{route}/over.bin?size=5001")
    out = str(tmp_path / "out")
    assert main([write_list(tmp_path, [exact, over]), "-o", out, "--max-size", "5000", "--client", client,
                 "-q"]) == 1
    records = manifest(out)
    assert records[exact]["status"] == "ok" and records[exact]["bytes"] == 5000
    assert records[over]["error"]["kind"] == "too-large"


# -- leases -----------------------------------------------------------------------------------


def test_a_worker_cannot_renew_another_workers_lease(tmp_path):
    """Mutation: ``renew`` without the holder check (leases.py): w2's heartbeats would keep w1's
    lease alive after w1 died, and the URL would never be handed out again."""
    clock = Clock()
    rules = RunRules(Options.create(out=str(tmp_path)).worker_form())
    coord = Coordinator(rules, "run1", epoch=7, lease_timeout=10.0, clock=clock)
    join(coord, "w1")
    join(coord, "w2")
    coord.offer(task(0))
    grant = coord.lease("w1", 1)
    assert isinstance(grant, Grant)
    lease = grant.leases[0][0]
    for _ in range(3):  # w1 is silent; w2 names w1's lease every 6 s
        clock.now += 6
        assert coord.heartbeat("w2", [lease]) == [lease]  # not w2's: reported lost to it
    again = coord.lease("w2", 1)
    assert isinstance(again, Grant) and [t.index for _, t in again.leases] == [0]  # w1's lease expired


@pytest.fixture(params=["manager", "redis"])
def cluster(request, tmp_path):
    with cluster_on(request.param, tmp_path) as running:
        yield running


def test_a_download_longer_than_the_lease_timeout_is_never_handed_out_twice(server, cluster, tmp_path):
    """End to end: leases of 1 s, downloads of 3 s: the worker's heartbeats keep its leases, so no
    other worker gets the URL (each is requested once) and serve counts no expired lease."""
    urls = [server.url(f"/slow/long{i}.bin?delay=3&size=500") for i in range(4)]
    out = str(tmp_path / "srv")
    srv = cluster.serve(write_list(tmp_path, urls), out, "--lease-timeout", "1")
    joined = server.hold("/slow/")  # until every worker has joined: else one could end the run alone
    workers = [cluster.work(srv.address, str(tmp_path / f"w{i}"), "--pool", "4", "--prefetch", "0",
                            name=f"work{i}") for i in range(2)]
    cluster.wait_joined(srv.address, 2)
    joined.set()
    assert srv.wait(90) == 0 and [w.wait(30) for w in workers] == [0, 0]
    assert set(manifest(out)) == set(urls)
    assert all(server.stats.requests[f"/slow/long{i}.bin"] == 1 for i in range(4)), dict(server.stats.requests)
    assert "expired" not in srv.text() and "Traceback" not in srv.text()


# -- promises with no test on 28b5069 --------------------------------------------------------


def test_a_completed_redis_run_deletes_its_keys(server, tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    cluster = Cluster(tmp_path, redis.url, queue="tidy")
    try:
        urls = [server.url(f"/files/tidy{i}.bin?size=300") for i in range(5)]
        srv = cluster.serve(write_list(tmp_path, urls), str(tmp_path / "srv"))
        client = redis.client()
        wait_until(lambda: client.exists("fetcher:tidy:run"), timeout=30, what="the run's keys")
        worker = cluster.work(srv.address, str(tmp_path / "w"))
        assert srv.wait(60) == 0 and worker.wait(30) == 0
        assert all(":worker:" in k for k in client.keys("fetcher:tidy:*"))  # a worker's own key expires by itself
        assert not any(client.exists(f"fetcher:tidy:{key}") for key in ("run", "tasks", "results", "stats"))
    finally:
        cluster.close()
        redis.stop()


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o644, True), (0o640, True)])
def test_a_redis_password_file_others_can_read_is_warned_about(tmp_path, mode, warned):
    from fetcher.distributed.redis.common import redis_spec

    path = tmp_path / "pass"
    path.write_text("pw\n", encoding="utf-8")
    path.chmod(mode)
    said: list[str] = []
    spec = redis_spec("redis://127.0.0.1:1/0", "q", str(path), said.append)
    assert spec.password == "pw"
    assert bool(said) is warned
    if warned:
        assert f"chmod 600 {path}" in said[0] and "other users" in said[0]
    assert stat.S_IMODE(os.stat(path).st_mode) == mode  # warned, never changed behind the user's back
