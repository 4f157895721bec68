"""Distributed mode end to end: ``fetcher serve`` and ``fetcher work`` as real processes on 127.0.0.1.

The contract: every test that takes the ``broker`` fixture runs once per
broker, the manager (``serve`` itself, on --bind) and Redis (a real
redis-server started for the test), with the same assertions. Where a test
waits for a lease to expire it makes the lease timeout small with
``--lease-timeout``. No test asserts a duration: each bounds how long it
waits for a run to end, generously.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
from pathlib import Path

import pytest
from cluster import KEY, Cluster, broker_spec, free_port, manifest, silent_server, wait_until
from conftest import write_list
from redis_helper import RedisServer

from fetcher.cli.main import main
from fetcher.distributed.broker import ManagerSpec, RedisSpec
from fetcher.distributed.events import Outcome
from fetcher.sources.readers import read_rows
from fetcher.sources.tasks import iter_rows
from fetcher.distributed.server import ServeConfig, Served, serve
from fetcher.distributed.worker import Worker, WorkerConfig
from fetcher.options import Options
from fetcher.run.progress import Progress


@pytest.fixture(params=["manager", "redis"])
def broker(request, tmp_path):
    """None for the manager broker, else a running RedisServer."""
    if request.param == "manager":
        yield None
        return
    redis = RedisServer(tmp_path / "redis").start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def cluster(tmp_path, broker):
    running = Cluster(tmp_path, None if broker is None else broker.url)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def manager_cluster(tmp_path):
    running = Cluster(tmp_path)
    try:
        yield running
    finally:
        running.close()


def slow_urls(server, prefix: str, count: int, delay: float) -> list[str]:
    return [server.url(f"/slow/{prefix}{i}.bin?delay={delay}&size=3000") for i in range(count)]


def assert_files_where_the_manifest_says(records: dict) -> None:
    for record in records.values():
        assert os.path.getsize(os.path.join(record["worker"]["out"], record["path"])) == record["bytes"]


def test_two_workers_share_the_list_one_started_before_the_server(server, cluster, tmp_path, capsys, monkeypatch):
    urls = slow_urls(server, "a", 30, 0.3)
    out, folders = str(tmp_path / "srv"), [str(tmp_path / "w1"), str(tmp_path / "w2")]
    port = free_port()
    joined = server.hold("/slow/")  # until every worker has joined: else one could end the run alone, and a worker that
    # connects after serve ended waits for a server that is gone (and no share would be proven)
    early = cluster.work(cluster.address(port), folders[0], "--pool", "3", name="w1")
    early.wait_for("waiting for the server")
    srv = cluster.serve(write_list(tmp_path, urls), out, port=port)
    late = cluster.work(srv.address, folders[1], "--pool", "3", name="w2")
    cluster.wait_joined(srv.address, 2)
    joined.set()
    monkeypatch.setenv("FETCHER_AUTHKEY", KEY)
    wait_until(lambda: cluster.stats(srv.address).get("workers"), what="the run's stats")
    assert main(["status", srv.address, "--queue", cluster.queue]) == 0
    assert f"server {srv.address}" in capsys.readouterr().out
    assert srv.wait() == 0
    assert early.wait() == 0 and late.wait() == 0
    records = manifest(out)
    assert set(records) == set(urls)
    assert {r["status"] for r in records.values()} == {"ok"}
    assert {r["worker"]["out"] for r in records.values()} == set(folders)  # both took a share
    assert_files_where_the_manifest_says(records)


def test_a_worker_killed_mid_download_loses_nothing(server, cluster, tmp_path):
    urls = slow_urls(server, "k", 6, 1.0)
    out, rescuer_out = str(tmp_path / "srv"), str(tmp_path / "rescuer")
    srv = cluster.serve(write_list(tmp_path, urls), out, "--lease-timeout", "1")
    victim = cluster.work(srv.address, str(tmp_path / "victim"), "--pool", "3", name="victim")
    wait_until(lambda: server.stats.active >= 1, what="the victim's first download")
    victim.kill()  # SIGKILL: no goodbye, its leases are simply never renewed
    rescuer = cluster.work(srv.address, rescuer_out, "--pool", "3", name="rescuer")
    assert srv.wait() == 0
    assert rescuer.wait() == 0
    records = manifest(out)
    assert set(records) == set(urls)
    assert {r["status"] for r in records.values()} == {"ok"}
    # serve's lines about its workers carry its name, as its other lines do, on both brokers
    events = [line for line in srv.text().splitlines() if " joined (" in line or " expired (" in line]
    assert any(" expired (" in line for line in events) and any(" joined (" in line for line in events)
    assert all(line.startswith("fetcher serve: ") for line in events), events
    assert_files_where_the_manifest_says(records)


def test_the_server_restarts_and_workers_carry_on(server, cluster, tmp_path):
    """kill -9 on serve, then the same command again: workers keep their downloads; Redis keeps their results."""
    urls = slow_urls(server, "r", 16, 0.3)
    out, url_list = str(tmp_path / "srv"), write_list(tmp_path, urls)
    srv = cluster.serve(url_list, out, "--lease-timeout", "5")
    address = srv.address
    joined = server.hold("/slow/")  # until every worker has joined: else one could end the run alone
    workers = [cluster.work(address, str(tmp_path / f"w{i}"), "--pool", "2", name=f"w{i}") for i in (1, 2)]
    cluster.wait_joined(address, 2)
    joined.set()
    wait_until(lambda: cluster.stats(address).get("final", {}).get("ok", 0) >= 4, what="4 URLs done")
    srv.kill()  # a crash: the journal keeps what it had committed
    port = 0 if cluster.redis_url else int(address.rsplit(":", 1)[1])
    again = cluster.serve(url_list, out, "--lease-timeout", "5", port=port, name="serve-again")
    assert again.wait() == 0
    assert [w.wait() for w in workers] == [0, 0]
    assert any("the server restarted" in w.text() for w in workers)
    records = manifest(out)
    assert set(records) == set(urls)
    assert {r["status"] for r in records.values()} <= {"ok", "skipped"}  # skipped: done before the crash
    assert_files_where_the_manifest_says(records)


def test_a_wrong_key_is_refused_in_one_line(server, manager_cluster, tmp_path):
    cluster = manager_cluster
    srv = cluster.serve(write_list(tmp_path, [server.url("/files/x.bin")]), str(tmp_path / "srv"))
    intruder = cluster.work(srv.address, str(tmp_path / "w"), env={"FETCHER_AUTHKEY": "not-the-key-0123456789"})
    assert intruder.wait(30) == 2
    text = intruder.text().strip()
    assert "authkey" in text and "Traceback" not in text
    assert len(text.splitlines()) == 1
    srv.signal(signal.SIGINT)
    assert srv.wait() == 130


def test_a_per_host_cap_of_one_holds_across_three_workers(server, cluster, tmp_path):
    urls = slow_urls(server, "p", 9, 0.2)
    out = str(tmp_path / "srv")
    srv = cluster.serve(write_list(tmp_path, urls), out, "--per-host", "1")
    joined = server.hold("/slow/")  # until every worker has joined: else one could end the run alone
    workers = [cluster.work(srv.address, str(tmp_path / f"w{i}"), "--pool", "4", name=f"w{i}") for i in (1, 2, 3)]
    cluster.wait_joined(srv.address, 3)
    joined.set()
    assert srv.wait() == 0
    assert [w.wait() for w in workers] == [0, 0, 0]
    assert server.stats.snapshot()["max_active"] == 1  # the test server's own count of requests in flight
    assert len(manifest(out)) == 9


def test_ctrl_c_on_a_worker_returns_its_leases(server, cluster, tmp_path):
    urls = slow_urls(server, "c", 4, 1.0)
    out = str(tmp_path / "srv")
    srv = cluster.serve(write_list(tmp_path, urls), out)  # a 60 s lease timeout: only a returned lease is quick
    first = cluster.work(srv.address, str(tmp_path / "w1"), "--pool", "4", name="w1")
    wait_until(lambda: server.stats.active >= 1, what="a download")
    first.signal(signal.SIGINT)
    assert first.wait(30) == 130
    assert "returned" in first.text()
    second = cluster.work(srv.address, str(tmp_path / "w2"), "--pool", "4", name="w2")
    assert srv.wait(45) == 0  # well before 60 s: the leases came back at once
    assert second.wait() == 0
    assert "left, returning" in srv.text()
    assert {r["status"] for r in manifest(out).values()} == {"ok"}


def test_ctrl_c_on_the_server_stops_its_workers(server, cluster, tmp_path):
    srv = cluster.serve(write_list(tmp_path, slow_urls(server, "s", 8, 1.0)), str(tmp_path / "srv"))
    worker = cluster.work(srv.address, str(tmp_path / "w"), "--pool", "2")
    wait_until(lambda: server.stats.active >= 1, what="a download")
    srv.signal(signal.SIGINT)
    assert srv.wait(30) == 130
    assert worker.wait(30) == 130
    assert "the server stopped the run" in worker.text()


def test_a_stalled_broker_does_not_hang_a_worker(server, cluster, broker, tmp_path):
    """SIGSTOP freezes the broker (serve, or redis-server) with its connections open: a silent network."""
    urls = slow_urls(server, "z", 10, 0.3)
    out = str(tmp_path / "srv")
    srv = cluster.serve(write_list(tmp_path, urls), out, "--lease-timeout", "30")
    worker = cluster.work(srv.address, str(tmp_path / "w"), "--pool", "2", "--rpc-timeout", "0.5")
    wait_until(lambda: server.stats.active >= 1, what="a download")
    frozen = srv if broker is None else broker
    frozen.signal(signal.SIGSTOP)
    try:
        worker.wait_for("did not answer within 0.5 s")
    finally:
        frozen.signal(signal.SIGCONT)
    assert srv.wait() == 0
    assert worker.wait() == 0
    assert "Traceback" not in worker.text() + srv.text()
    assert {r["status"] for r in manifest(out).values()} == {"ok"}


def test_a_worker_facing_a_silent_server_gives_up_cleanly(cluster, broker, tmp_path):
    with silent_server() as address:
        where = f"127.0.0.1:{address[1]}" if broker is None else f"redis://127.0.0.1:{address[1]}/0"
        worker = cluster.work(where, str(tmp_path / "w"), "--rpc-timeout", "0.3", "--give-up-after", "1.5")
        assert worker.wait(30) == 1
    text = worker.text()
    assert "did not answer within 0.3 s" in text and "giving up" in text and "Traceback" not in text


def test_serve_without_a_key_makes_one_and_keeps_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FETCHER_AUTHKEY", raising=False)
    url_list, out = write_list(tmp_path, []), str(tmp_path / "srv")
    assert main(["serve", url_list, "--bind", "127.0.0.1:0", "-o", out]) == 0
    key_path = os.path.join(out, ".fetcher", "authkey")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    key = Path(key_path).read_text(encoding="utf-8").strip()
    assert len(key) == 64 and set(key) <= set("0123456789abcdef") and len(set(key)) > 4  # 256 random bits, in hex
    err = capsys.readouterr().err
    assert key_path in err and "--authkey-file" in err and key not in err
    assert main(["serve", url_list, "--bind", "127.0.0.1:0", "-o", out]) == 0
    assert Path(key_path).read_text(encoding="utf-8").strip() == key  # a restart keeps talking to its workers


def test_a_worker_needs_a_key_and_never_takes_it_from_argv(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FETCHER_AUTHKEY", raising=False)
    assert main(["work", "127.0.0.1:1", "-o", str(tmp_path / "w")]) == 2
    assert "FETCHER_AUTHKEY" in capsys.readouterr().err
    assert main(["work", "127.0.0.1:1", "--authkey", "secret"]) == 2


def serve_in_process(tmp_path, urls: list[str], options: Options, broker, workers: int = 1, pool: int = 2,
                     prefetch: int = 1) -> tuple[Served, list[Outcome]]:
    """serve() in this thread, with ``workers`` Worker threads: the remote backend under the real engine."""
    codes: list[Outcome] = []
    spec = ManagerSpec(("127.0.0.1", 0), KEY.encode()) if broker is None else RedisSpec(broker.url, "inproc")

    def start_workers(where: str) -> None:
        for i in range(workers):
            config = WorkerConfig(broker_spec(where) if broker is None else spec, str(tmp_path / f"w{i}"),
                                  pool=pool, prefetch=prefetch, rpc_timeout=5, give_up_after=30)
            worker = Worker(config)
            threading.Thread(target=lambda w=worker: codes.append(w.run()), daemon=True).start()

    items = iter_rows(read_rows(write_list(tmp_path, urls)), dedupe=False)
    served = serve(items, options, Progress(None, enabled=False), ServeConfig(spec, quiet=True),
                   on_listening=start_workers)
    wait_until(lambda: len(codes) == workers, timeout=30, what="the workers to exit")
    return served, codes


def test_the_server_decides_retries_and_failures_for_its_workers(server, broker, tmp_path):
    urls = [server.url("/flaky/a.bin?fail=2"), server.url("/status/404"), "not a url", server.url("/files/b.bin")]
    options = Options.create(out=str(tmp_path / "srv"), retries=3, backoff=0.05)
    served, codes = serve_in_process(tmp_path, urls, options, broker)
    assert (served.summary.ok, served.summary.failed) == (2, 2) and codes == [Outcome.DONE]
    records = manifest(options.output.out)
    assert records[urls[0]]["attempts"] == 3 and records[urls[0]]["status"] == "ok"
    assert records[urls[1]]["error"]["kind"] == "http-status"
    assert records["not a url"]["error"]["kind"] == "invalid-url"
    assert server.stats.requests["/flaky/a.bin"] == 3


def test_a_retry_after_pauses_the_host_for_every_worker(server, broker, tmp_path):
    limited = server.url("/flaky/r.jpg?fail=1&code=429&retry_after=2")
    urls = [limited, *(server.url(f"/files/o{i}.jpg") for i in range(4))]
    options = Options.create(out=str(tmp_path / "srv"), per_host=1)
    served, codes = serve_in_process(tmp_path, urls, options, broker, workers=2, prefetch=0)
    assert served.summary.ok == 5 and codes == [Outcome.DONE, Outcome.DONE]
    first_429 = server.stats.times["/flaky/r.jpg"][0]
    later = [t for times in server.stats.times.values() for t in times if t > first_429]
    assert later and min(later) - first_429 >= 1.9  # no worker sent anything to the paused host sooner
    assert server.stats.max_active == 1
