"""Hostile bytes in a broker: whatever anyone writes into a run's keys, or sends on the manager's wire,
is dropped and counted, never a crash or a stall of ``serve`` or a worker.

Each test runs ``fetcher serve`` and ``fetcher work`` as real processes, with a real redis-server
for the Redis broker, and garbage written by a second client while the run goes on.
"""

from __future__ import annotations

import os
import pickle
import random
import socket
import threading
from multiprocessing import connection

import pytest
from cluster import KEY, Cluster, manifest, wait_until
from conftest import write_list
from redis_helper import RedisServer

from fetcher.distributed.manager.rpc import Link
from fetcher.errors import LinkError

NOT_UTF8 = b"\x80\x81\xfe\xff garbage \xc3\x28"


def garbage(rng: random.Random, size: int = 64) -> bytes:
    """Random bytes that are never valid UTF-8 (a lone continuation byte first)."""
    return b"\x80" + rng.randbytes(size)


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def raw_client(redis: RedisServer):  # type: ignore[no-untyped-def]
    """A client that writes and reads bytes as they are (the test's own client decodes nothing)."""
    import redis as redis_py

    return redis_py.Redis(host="127.0.0.1", port=redis.port, socket_timeout=10)


def slow_urls(server, prefix: str, count: int, delay: float) -> list[str]:
    return [server.url(f"/slow/{prefix}{i}.bin?delay={delay}&size=1500") for i in range(count)]


def assert_every_url_once(out: str, urls: list[str]) -> None:
    records = manifest(out)  # fails on a second record for a URL
    assert set(records) == set(urls)
    assert {r["status"] for r in records.values()} == {"ok"}


def test_a_non_utf8_task_entry_does_not_stop_the_workers(server, redis, tmp_path):
    """28b5069: redis-py's decoder raised UnicodeDecodeError in every worker that read this entry."""
    cluster = Cluster(tmp_path, redis.url)
    try:
        urls = slow_urls(server, "u", 6, 0.05)
        out = str(tmp_path / "srv")
        srv = cluster.serve(write_list(tmp_path, urls), out)
        raw_client(redis).xadd(f"fetcher:{cluster.queue}:tasks", {b"m": NOT_UTF8})
        worker = cluster.work(srv.address, str(tmp_path / "w"), "--pool", "2")
        assert srv.wait(60) == 0 and worker.wait(30) == 0
        assert_every_url_once(out, urls)
        assert "Traceback" not in srv.text() + worker.text()
        assert "dropped entry" in worker.text() and "not UTF-8" in worker.text()
    finally:
        cluster.close()


class RedisVandal:
    """Writes binary garbage into every key of a run, again and again, until stopped (bounded)."""

    def __init__(self, redis: RedisServer, queue: str) -> None:
        self.client = raw_client(redis)
        self.prefix = f"fetcher:{queue}:".encode()
        self.stop = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(24)
        while not self.stop.is_set() and self.rounds < 200:
            self.strike(rng)
            self.rounds += 1
            self.stop.wait(0.05)

    def strike(self, rng: random.Random) -> None:
        p, c = self.prefix, self.client
        c.xadd(p + b"tasks", {b"m": garbage(rng)})
        c.xadd(p + b"tasks", {garbage(rng, 8): garbage(rng)})
        c.xadd(p + b"results", {b"m": garbage(rng)})
        c.xadd(p + b"results", {b"m": b'{"v":1,"kind":"results","worker":{},"items":[["1-0",{"url":5}]]}'})
        c.hset(p + b"run", garbage(rng, 8), garbage(rng))
        if rng.random() < 0.2:  # the fields serve and workers read: serve writes them back
            c.hset(p + b"run", rng.choice([b"state", b"epoch", b"options", b"version", b"lease_timeout"]),
                   garbage(rng))
        c.set(p + b"stats", garbage(rng))
        c.set(p + b"worker:" + rng.randbytes(4).hex().encode(), garbage(rng), ex=5)
        for key in c.scan_iter(p + b"worker:*", count=100):  # the workers' own keys too, now and then
            if rng.random() < 0.1:
                c.set(key, garbage(rng), ex=5)


class ManagerVandal:
    """Sends garbage to a manager-broker serve: raw bytes without the key, and bad calls with it."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.address = (host, int(port))
        self.accepted: list[bytes] = []  # garbage the server answered "ok" to: must stay empty
        self.stop = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(24)
        while not self.stop.is_set() and self.rounds < 100:
            self.strike(rng)
            self.rounds += 1
            self.stop.wait(0.05)

    def strike(self, rng: random.Random) -> None:
        try:
            with socket.create_connection(self.address, timeout=5) as sock:  # no key: bytes at the handshake
                sock.sendall(garbage(rng, rng.randrange(1, 300)))
                sock.settimeout(2)
                sock.recv(100)
        except OSError:
            pass
        try:
            link = Link(self.address, KEY.encode(), timeout=5)
        except LinkError:
            return
        try:
            conn: connection.Connection = link._conn  # the test speaks the framing itself, to send garbage
            for request in (garbage(rng, rng.randrange(1, 500)),
                            pickle.dumps(("complete", ("w-vandal", [(1, "not a result")]))),
                            pickle.dumps(("lease", ([], "n"))), pickle.dumps(["hello"]),
                            pickle.dumps(("release", ("w", [[1]], True))), pickle.dumps(("__init__", ()))):
                conn.send_bytes(request)
                kind, _value = pickle.loads(conn.recv_bytes())
                if kind != "error":
                    self.accepted.append(request)  # checked by the test, in its own thread
        except (OSError, EOFError):
            pass  # serve closed the connection: the run is ending
        finally:
            link.close()


@pytest.mark.parametrize("broker", ["manager", "redis"])
def test_garbage_in_every_key_of_a_run_is_dropped_and_counted(server, tmp_path, broker):
    """serve + two workers; binary garbage into every key (or on the wire) the whole run: every URL once."""
    redis = RedisServer(tmp_path / "redis").start() if broker == "redis" else None
    cluster = Cluster(tmp_path, None if redis is None else redis.url)
    vandal: RedisVandal | ManagerVandal | None = None
    try:
        urls = slow_urls(server, "g", 40, 0.2)
        out = str(tmp_path / "srv")
        srv = cluster.serve(write_list(tmp_path, urls), out, "--lease-timeout", "60")
        vandal = RedisVandal(redis, cluster.queue) if redis is not None else ManagerVandal(srv.address)
        vandal.strike(random.Random(1))  # before any worker reads anything
        vandal.thread.start()
        workers = [cluster.work(srv.address, str(tmp_path / f"w{i}"), "--pool", "3", name=f"work{i}")
                   for i in range(2)]
        wait_until(lambda: vandal.rounds >= 10, timeout=60, what="garbage written during the run")
        assert srv.wait(120) == 0  # garbage goes on through serve's closing linger, until it exits
        vandal.stop.set()
        vandal.thread.join(10)
        assert [w.wait(30) for w in workers] == [0, 0]
        assert getattr(vandal, "accepted", []) == []
        assert_every_url_once(out, urls)
        assert set(server.stats.requests.values()) == {1}  # garbage never made a URL be fetched twice
        text = srv.text() + "".join(w.text() for w in workers)
        assert "Traceback" not in text
        summary = [line for line in srv.text().splitlines() if "malformed broker messages" in line]
        assert summary and int(summary[0].split("dropped ")[1].split()[0]) >= 10, srv.text()[-2000:]
    finally:
        if vandal is not None:
            vandal.stop.set()
        cluster.close()
        if redis is not None:
            redis.stop()


def test_a_run_description_overwritten_with_garbage_is_written_back(server, redis, tmp_path):
    """A worker that finds the run's description unreadable waits; serve writes it back within a tick."""
    cluster = Cluster(tmp_path, redis.url)
    try:
        urls = slow_urls(server, "d", 4, 0.05)
        out = str(tmp_path / "srv")
        srv = cluster.serve(write_list(tmp_path, urls), out)
        client = raw_client(redis)
        run = f"fetcher:{cluster.queue}:run"
        for name in (b"options", b"state", b"epoch", b"protocol"):
            client.hset(run, name, NOT_UTF8)
        worker = cluster.work(srv.address, str(tmp_path / "w"))
        assert srv.wait(60) == 0 and worker.wait(30) == 0
        assert_every_url_once(out, urls)
        assert "Traceback" not in srv.text() + worker.text()
    finally:
        cluster.close()


def test_the_drop_log_is_rate_limited(caplog):
    import logging

    from fetcher.distributed.dropped import Dropped

    dropped = Dropped(logging.getLogger("fetcher.test.dropped"), "who", burst=3, interval=3600)
    with caplog.at_level(logging.WARNING, logger="fetcher.test.dropped"):
        for i in range(1000):
            dropped(f"message {i}", "garbage")
    assert dropped.count == 1000
    assert len(caplog.records) == 4  # the burst, then one line for the next interval
    assert os.linesep not in caplog.records[0].getMessage()


def test_a_damaged_epoch_does_not_hide_that_the_run_is_over():
    """Found by the test above (1 run in 5): garbage in the epoch field during serve's closing linger
    made a worker drop the state beside it too, miss "done", and wait for --give-up-after."""
    import logging

    from fetcher.distributed.dropped import Dropped
    from fetcher.distributed.protocol import Finished
    from fetcher.distributed.redis.common import Keys
    from fetcher.distributed.redis.session import RedisSession

    session = RedisSession.__new__(RedisSession)  # _state only: no connection needed
    session._keys, session._where, session._epoch, session._told = Keys("q"), "here", "7", False
    session._dropped = Dropped(logging.getLogger("fetcher.test"), "test")
    assert session._state([b"done", NOT_UTF8]) == Finished(False) and session._told
    assert session._state([NOT_UTF8, b"7"]) is None and session._dropped.count == 2


class ShardVandal:
    """Garbage in the shard traffic of a webdataset run: workers' mailboxes, shard reports, exchange calls."""

    def __init__(self, address: str, redis: RedisServer | None, queue: str) -> None:
        self.address, self.queue = address, queue
        self.client = raw_client(redis) if redis is not None else None
        self.stop = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(26)
        while not self.stop.is_set() and self.rounds < 200:
            self.strike(rng)
            self.rounds += 1
            self.stop.wait(0.05)

    def forged(self, rng: random.Random) -> list[object]:
        """Reports of the right shape that are not the workers': serve must refuse them, never commit."""
        shard = rng.randrange(0, 4)
        return [{"op": "written", "shard": shard, "token": f"{shard}.forged", "count": 2, "failed": {}},
                {"op": "broken", "shard": shard, "token": "x", "why": "vandal"},
                {"op": "committed", "shard": shard, "token": "y"}, {"op": "written", "shard": "0"},
                {"op": "nonsense"}, [1, 2]]

    def strike(self, rng: random.Random) -> None:
        if self.client is not None:
            self._redis(rng)
        else:
            self._manager(rng)

    def _redis(self, rng: random.Random) -> None:
        import json

        p, c = f"fetcher:{self.queue}:".encode(), self.client
        ids = [key.rsplit(b":worker:", 1)[1] for key in c.scan_iter(p + b"worker:*", count=100)]
        epoch = c.hget(p + b"run", b"epoch")
        for worker in ids + [b"nobody"]:
            c.rpush(p + b"mail:" + worker, garbage(rng))
            if epoch is not None and epoch.isdigit():  # well formed, numbered past anything serve has sent
                c.rpush(p + b"mail:" + worker, json.dumps({"v": 1, "kind": "order", "order": {
                    "op": "abort", "shard": rng.randrange(0, 4), "token": "forged",
                    "seq": (int(epoch) << 32) + (1 << 32) - 1 - rng.randrange(100)}}))
            c.rpush(p + b"mail:" + worker, json.dumps({"v": 1, "kind": "order", "order": {
                "op": "rows", "shard": 0, "token": "forged", "rows": [{"key": "x", "row": {}}]}}))
            c.rpush(p + b"mail:" + worker, json.dumps({"v": 1, "kind": "order", "order": {
                "op": "abort", "shard": rng.randrange(0, 4), "token": "forged"}}))
            c.xadd(p + b"results", {b"m": json.dumps({"v": 1, "kind": "shard", "worker": {"id": worker.decode(
                "utf-8", "replace"), "host": "h", "out": "o"}, "reports": self.forged(rng)[:1]})})
        c.xadd(p + b"results", {b"m": json.dumps({"v": 1, "kind": "shard", "worker": {}, "reports": [{"op": 1}]})})
        c.xadd(p + b"results", {b"m": b'{"v":1,"kind":"shard"}'})

    def _manager(self, rng: random.Random) -> None:
        host, port = self.address.rsplit(":", 1)
        try:
            link = Link((host, int(port)), KEY.encode(), timeout=5)
        except LinkError:
            return
        try:
            conn: connection.Connection = link._conn  # the test speaks the framing itself, to send garbage
            stats_call = pickle.dumps(("stats", ()))
            conn.send_bytes(stats_call)
            _kind, stats = pickle.loads(conn.recv_bytes())
            ids = [w["id"] for w in stats["workers"]] if isinstance(stats, dict) else []
            for worker in ids + ["nobody"]:
                for report in self.forged(rng):
                    conn.send_bytes(pickle.dumps(("exchange", (worker, [report], 0))))  # reads its mail
                    pickle.loads(conn.recv_bytes())
                conn.send_bytes(garbage(rng, 200))
                pickle.loads(conn.recv_bytes())
        except (OSError, EOFError):
            pass  # serve closed the connection: the run is ending
        finally:
            link.close()


@pytest.mark.parametrize("broker", ["manager", "redis"])
def test_garbage_in_the_shard_traffic_is_dropped_and_forged_reports_are_refused(server, tmp_path, broker):
    """A webdataset run with garbage and forged shard messages the whole run: every input row once,
    in one finished shard of one folder; no traceback."""
    from shard_reader import read_folder

    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    redis = RedisServer(tmp_path / "redis").start() if broker == "redis" else None
    cluster = Cluster(tmp_path, None if redis is None else redis.url)
    vandal: ShardVandal | None = None
    try:
        urls = [server.url(f"/img/v{i}.png?format=png&w={20 + i % 5}&h=20") for i in range(30)]
        pq.write_table(pa.table({"url": urls}), str(tmp_path / "in.parquet"))
        out, folders = str(tmp_path / "srv"), [str(tmp_path / f"w{i}") for i in range(2)]
        srv = cluster.serve(str(tmp_path / "in.parquet"), out, "--output-format", "webdataset", "--shard-size", "4",
                            "--delay", "0.05")
        vandal = ShardVandal(srv.address, redis, cluster.queue)
        workers = [cluster.work(srv.address, folder, "--pool", "2", name=f"work{i}")
                   for i, folder in enumerate(folders)]
        vandal.thread.start()
        wait_until(lambda: vandal.rounds >= 10, timeout=60, what="garbage written during the run")
        assert srv.wait(120) == 0, srv.text()[-3000:]
        vandal.stop.set()
        vandal.thread.join(10)
        assert [w.wait(30) for w in workers] == [0, 0]
        rows = [row for folder in folders for row in read_folder(folder, 4)]
        assert sorted(r["url"] for r in rows) == sorted(urls)
        assert sorted(manifest(out)) == sorted(urls)
        text = srv.text() + "".join(w.text() for w in workers)
        assert "Traceback" not in text
        assert "refused shard" in srv.text() and "dropped" in text
        # A caller that never said hello is no worker of the run (the manager case; Redis serve lists only
        # workers with a worker key, which only a hello writes: there it guards, it cannot fail today).
        assert "  worker nobody (" not in srv.text()
    finally:
        if vandal is not None:
            vandal.stop.set()
        cluster.close()
        if redis is not None:
            redis.stop()
