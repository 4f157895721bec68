"""Faults only the Redis broker has: Redis restarted or emptied, a network cut to it, foreign entries, passwords.

The faults both brokers share (a worker killed, serve killed and restarted,
Ctrl-C, a stalled broker) are in test_distributed.py, run on both.
"""

from __future__ import annotations

import collections
import json
import signal
import time

import pytest
from cluster import Cluster, manifest, wait_until
from conftest import write_list
from redis_helper import RedisServer, Relay

from fetcher.cli import main


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path, redis):
    running = Cluster(tmp_path, redis.url)
    try:
        yield running
    finally:
        running.close()


def slow_urls(server, prefix: str, count: int, delay: float) -> list[str]:
    return [server.url(f"/slow/{prefix}{i}.bin?delay={delay}&size=2000") for i in range(count)]


def assert_each_url_once(records: dict, urls: list[str]) -> None:
    assert set(records) == set(urls)
    assert {r["status"] for r in records.values()} <= {"ok", "skipped"}


def test_results_left_in_redis_by_a_killed_serve_are_picked_up(server, cluster, redis, tmp_path):
    """Workers finish while serve is dead; the restarted serve takes their results without fetching again."""
    urls = slow_urls(server, "k", 8, 0.4)
    out, url_list = str(tmp_path / "srv"), write_list(tmp_path, urls)
    srv = cluster.serve(url_list, out)  # 60 s leases: nothing is handed out twice in this test
    worker = cluster.work(srv.address, str(tmp_path / "w"), "--pool", "4")
    wait_until(lambda: server.stats.active >= 2, what="downloads")
    srv.kill()
    results = f"fetcher:{cluster.queue}:results"

    def left_in_redis() -> int:  # results wait there in batches, a JSON list per entry
        entries = redis.client().xrange(results, "-", "+")
        return sum(len(json.loads(fields["m"]).get("items", [])) for _, fields in entries)

    wait_until(lambda: left_in_redis() >= 3 and server.stats.active == 0, timeout=30,
               what="the worker to finish what it held, without serve")
    again = cluster.serve(url_list, out, name="serve-again")
    assert again.wait() == 0 and worker.wait() == 0
    assert_each_url_once(manifest(out), urls)
    assert set(server.stats.requests.values()) == {1}  # no URL fetched twice
    assert "Traceback" not in worker.text() + again.text()


def test_redis_restarted_with_aof_loses_nothing(server, cluster, redis, tmp_path):
    urls = slow_urls(server, "a", 12, 0.3)
    out = str(tmp_path / "srv")
    srv = cluster.serve(write_list(tmp_path, urls), out)
    worker = cluster.work(srv.address, str(tmp_path / "w"), "--pool", "3", "--rpc-timeout", "2")
    wait_until(lambda: sum(server.stats.requests.values()) >= 3, what="a few downloads")
    redis.restart()  # SIGTERM: Redis writes its append-only file; then the same port and folder again
    assert srv.wait(90) == 0 and worker.wait(30) == 0
    assert_each_url_once(manifest(out), urls)
    assert set(server.stats.requests.values()) == {1}  # nothing lost, so nothing fetched twice
    assert "Traceback" not in worker.text() + srv.text()


def test_redis_emptied_mid_run_gets_back_every_url_not_final(server, cluster, redis, tmp_path):
    urls = slow_urls(server, "e", 12, 0.3)
    out = str(tmp_path / "srv")
    srv = cluster.serve(write_list(tmp_path, urls), out, "--lease-timeout", "5")
    worker = cluster.work(srv.address, str(tmp_path / "w"), "--pool", "3", "--rpc-timeout", "2")
    wait_until(lambda: sum(server.stats.requests.values()) >= 3, what="a few downloads")
    redis.client().flushall()
    assert srv.wait(90) == 0 and worker.wait(30) == 0
    assert_each_url_once(manifest(out), urls)
    assert "put back" in srv.text()
    assert "Traceback" not in worker.text() + srv.text()


def test_a_45_s_network_cut_between_a_worker_and_redis(server, cluster, redis, tmp_path):
    """A relay that stops passing bytes, connections left open: deadlines, reconnects, no traceback."""
    relay = Relay(redis.port)
    try:
        urls = slow_urls(server, "n", 8, 0.5)
        out = str(tmp_path / "srv")
        srv = cluster.serve(write_list(tmp_path, urls), out, "--lease-timeout", "120")
        worker = cluster.work(f"redis://127.0.0.1:{relay.port}/0", str(tmp_path / "w"), "--pool", "2",
                              "--rpc-timeout", "2")
        wait_until(lambda: sum(server.stats.requests.values()) >= 2, what="the first downloads")
        relay.cut()
        worker.wait_for("did not answer within 2 s", timeout=20)
        time.sleep(45)
        relay.mend()
        assert srv.wait(90) == 0 and worker.wait(30) == 0
    finally:
        relay.close()
    assert_each_url_once(manifest(out), urls)
    text = worker.text()
    assert "reconnected" in text and "Traceback" not in text + srv.text()


def test_foreign_and_malformed_entries_are_dropped_not_fatal(server, cluster, redis, tmp_path):
    urls = slow_urls(server, "m", 6, 0.1)
    out = str(tmp_path / "srv")
    srv = cluster.serve(write_list(tmp_path, urls), out)
    client = redis.client()
    prefix = f"fetcher:{cluster.queue}:"
    for fields in ({"m": "not json"}, {"other": "field"}, {"m": json.dumps({"v": 99, "kind": "task"})},
                   {"m": json.dumps({"v": 1, "kind": "task", "task": {"url": 5}})}):
        client.xadd(prefix + "tasks", fields)
        client.xadd(prefix + "results", fields)
    client.xadd(prefix + "results", {"m": json.dumps({"v": 1, "kind": "result", "lease": "1-0", "result": {}})})
    worker = cluster.work(srv.address, str(tmp_path / "w"), "--pool", "2")
    assert srv.wait() == 0 and worker.wait() == 0
    assert_each_url_once(manifest(out), urls)
    assert "dropped entry" in srv.text() and "dropped entry" in worker.text()
    assert "Traceback" not in srv.text() + worker.text()


def test_the_password_comes_from_the_environment_or_a_file_never_argv(server, tmp_path, capsys):
    secured = RedisServer(tmp_path / "locked", password="s3cret-redis-pass").start()
    running = Cluster(tmp_path, secured.url)
    try:
        (tmp_path / "pass").write_text("s3cret-redis-pass\n", encoding="utf-8")
        (tmp_path / "pass").chmod(0o600)
        urls = [server.url("/files/p.bin")]
        srv = running.serve(write_list(tmp_path, urls), str(tmp_path / "srv"),
                            env={"FETCHER_REDIS_PASSWORD": "s3cret-redis-pass"})
        intruder = running.work(srv.address, str(tmp_path / "x"), env={"FETCHER_REDIS_PASSWORD": "wrong"})
        assert intruder.wait(30) == 2
        assert "password" in intruder.text() and "Traceback" not in intruder.text()
        assert len(intruder.text().strip().splitlines()) == 1
        worker = running.work(srv.address, str(tmp_path / "w"), "--redis-password-file", str(tmp_path / "pass"))
        assert srv.wait() == 0 and worker.wait() == 0
    finally:
        running.close()
        secured.stop()
    assert main(["work", "redis://me:s3cret@127.0.0.1:1/0", "-o", str(tmp_path / "w2")]) == 2
    assert "not in the URL" in capsys.readouterr().err


def test_several_runs_share_one_redis_by_queue(server, redis, tmp_path):
    runs = {}
    for name in ("one", "two"):
        running = Cluster(tmp_path / name, redis.url, queue=name)
        (tmp_path / name).mkdir()
        urls = [server.url(f"/files/{name}{i}.bin") for i in range(3)]
        srv = running.serve(write_list(tmp_path / name, urls), str(tmp_path / name / "srv"))
        runs[name] = (running, srv, running.work(srv.address, str(tmp_path / name / "w")), urls)
    try:
        for name, (running, srv, worker, urls) in runs.items():
            assert srv.wait() == 0 and worker.wait() == 0
            assert set(manifest(str(tmp_path / name / "srv"))) == set(urls)  # each run got its own URLs only
    finally:
        for running, *_ in runs.values():
            running.close()
    assert collections.Counter(server.stats.requests.values()) == {1: 6}


def test_a_queue_in_use_by_another_run_is_refused(server, cluster, tmp_path):
    urls = [server.url("/slow/q.bin?delay=1")]
    first = cluster.serve(write_list(tmp_path, urls), str(tmp_path / "one"))
    second = cluster.serve(write_list(tmp_path, urls, "other.txt"), str(tmp_path / "two"), name="serve-two",
                           wait=False)
    assert second.wait(30) == 2
    assert "belongs to run" in second.text() and "--queue" in second.text()
    first.signal(signal.SIGINT)
    assert first.wait(30) == 130


def test_redis_emptied_between_serves_run_check_and_its_reaper_is_recovered_not_a_crash(tmp_path, monkeypatch):
    """serve's tick reads the run's description, then reaps idle leases (XAUTOCLAIM). A FLUSHALL in
    between (a loaded serve preempted there: a CI-like serial run at load ~12) made XAUTOCLAIM answer
    NOGROUP, and serve died with a traceback. Here the flush lands exactly there, every time."""
    import redis as redis_py

    from fetcher.distributed.broker import RedisSpec
    from fetcher.distributed.brokers import serve_broker, worker_sessions
    from fetcher.distributed.protocol import Grant, RunRules, Welcome, WorkerInfo
    from fetcher.models import FetchTask
    from fetcher.options import Options

    server = RedisServer(tmp_path / "redis").start()
    spec = RedisSpec(server.url, "window")
    serve_side = serve_broker(spec, RunRules(Options.create(out=str(tmp_path / "srv")).worker_form()), "run1", 7,
                              60.0, None)
    serve_side.start()
    session = worker_sessions(spec)(5.0)
    try:
        assert isinstance(session.hello(WorkerInfo("w1", "host", 1, "/out/w1", "thread", 2, 2), []), Welcome)
        task = FetchTask(url="http://h.example/f0", name="f0", index=0)
        serve_side.offer(task)

        def leased() -> list:
            serve_side.collect(0)
            reply = session.lease("w1", 1)
            return reply.leases if isinstance(reply, Grant) else []

        assert [t.url for _, t in wait_until(leased, timeout=10, what="a grant")] == [task.url]
        real = redis_py.Redis.xautoclaim
        flushed: list[bool] = []

        def flush_first(self, *args, **kwargs):  # the flush lands after the run check, before the reaper
            if not flushed:
                flushed.append(self.flushall())
            return real(self, *args, **kwargs)

        monkeypatch.setattr(redis_py.Redis, "xautoclaim", flush_first)
        wait_until(lambda: serve_side.collect(0.05) is not None and flushed, timeout=10, what="serve's next tick")
        events: list[str] = []
        wait_until(lambda: events.extend(serve_side.take_events()) or any("put back 1" in e for e in events),
                   timeout=10, what="the URL in flight put back")
        again = wait_until(leased, timeout=10, what="the URL leased again")
        assert [t.url for _, t in again] == [task.url]
    finally:
        session.close()
        serve_side.stop(completed=False)
        server.stop()
