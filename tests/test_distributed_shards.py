"""img2dataset's webdataset shards built across hosts: ``fetcher serve --output-format webdataset`` + workers.

Each test runs once per broker (the manager broker and a real redis-server). The shards are
read back from every worker's folder with tarfile, pyarrow and the ``webdataset`` package
(shard_reader.check_shard checks each shard's three files field by field).
"""

from __future__ import annotations

import os
import re

import pytest
from cluster import cluster_on, manifest, wait_until
from shard_reader import read_folder

from fetcher.distributed.protocol import PROTOCOL
from test_datasets_layout import dataset_input, webdataset_samples

pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
pytest.importorskip("webdataset")


@pytest.fixture(params=["manager", "redis"])
def cluster(request, tmp_path):
    with cluster_on(request.param, tmp_path) as running:
        yield running


def shard_files(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if re.fullmatch(r"\d{5}(\.tar|\.parquet|_stats\.json)", n))


def every_row(folders: list[str], size: int, caption: bool = False) -> tuple[list[dict], dict[str, list[str]]]:
    """Every row of every finished shard of every folder, and which folder has which shard ids."""
    rows, ids = [], {}
    for folder in folders:
        found = read_folder(folder, size, caption)
        rows += [{**row, "_folder": folder} for row in found]
        ids[folder] = sorted({n[:5] for n in shard_files(folder)})
    return rows, ids


def test_two_workers_write_img2datasets_layout_each_in_its_folder(server, cluster, tmp_path):
    path, given = dataset_input(server, tmp_path)
    out, folders = str(tmp_path / "srv"), [str(tmp_path / "w1"), str(tmp_path / "w2")]
    srv = cluster.serve(path, out, "--output-format", "webdataset", "--shard-size", "4", "--caption-column",
                        "caption", "--resize", "32", "--resize-mode", "keep_ratio", "--min-image-size", "10",
                        "--retries", "0")
    joined = server.hold("/img/")  # until every worker has joined: else one could end the run alone (both must write shards)
    workers = [cluster.work(srv.address, folder, "--pool", "2", name=f"w{i}") for i, folder in enumerate(folders)]
    cluster.wait_joined(srv.address, 2)
    joined.set()
    assert srv.wait(120) == 1, srv.text()  # some rows failed
    assert all(w.wait() == 0 for w in workers)
    rows, ids = every_row(folders, 4, caption=True)
    assert sorted(r["url"] for r in rows) == sorted(g["url"] for g in given)  # each input row once, failures too
    all_ids = [i for f in folders for i in ids[f]]
    assert len(all_ids) == len(set(all_ids)) and all(ids.values())  # unique across folders; both wrote some
    by_url = {r["url"]: r for r in rows}
    for row in given:
        found = by_url[row["url"]]
        assert (found["caption"], found["lang"], found["score"]) == (row["caption"], row["lang"], row["score"])
    records = manifest(out)  # serve's manifest: each URL's shard, key and worker folder
    assert set(records) == set(by_url)
    for url, record in records.items():
        row = by_url[url]
        assert (record["key"], record["shard"]) == (row["key"], f"{int(row['key']) // 10:05d}.tar")
        if row["status"] == "success":
            assert record["worker"]["out"] == row["_folder"] and record["path"].startswith(record["shard"] + "/")
            assert record["sha256"] == row["sha256"]
    tars = [os.path.join(f, n) for f in folders for n in shard_files(f) if n.endswith(".tar")]
    samples = webdataset_samples(tars)
    assert sorted(s["__key__"] for s in samples) == sorted(r["key"] for r in rows if r["status"] == "success")
    assert all(not os.path.exists(os.path.join(f, "staging")) for f in folders)


def test_serve_rerun_keeps_finished_shards_and_retries_only_the_failed_rows(server, cluster, tmp_path):
    urls = [server.url(f"/img/r{i}.png?format=png&w={20 + i}&h=20") for i in range(9)]
    urls[4] = server.url("/flaky/r4.png?fail=1&format=png")  # fails once: a failed row, then a success
    pq.write_table(pa.table({"url": urls}), str(tmp_path / "in.parquet"))
    out, folder = str(tmp_path / "srv"), str(tmp_path / "w1")
    args = ("--output-format", "webdataset", "--shard-size", "4", "--retries", "0")
    srv = cluster.serve(str(tmp_path / "in.parquet"), out, *args)
    worker = cluster.work(srv.address, folder, "--pool", "2")
    assert srv.wait(120) == 1 and worker.wait() == 0
    before = {n: os.path.getmtime(os.path.join(folder, n)) for n in shard_files(folder)}
    assert len(before) == 9  # 4 + 4 + 1 rows, the failure included
    assert [r["status"] for r in read_folder(folder, 4) if r["url"] == urls[4]] == ["failed_to_download"]
    again = cluster.serve(str(tmp_path / "in.parquet"), out, *args, name="serve2")
    worker = cluster.work(again.address, folder, "--pool", "2", name="w1-again")
    assert again.wait(120) == 0, again.text()
    assert worker.wait() == 0
    assert "8 skipped" in again.text()  # the samples of finished shards: no request
    after = {n: os.path.getmtime(os.path.join(folder, n)) for n in shard_files(folder)}
    assert {n: after[n] for n in before} == before  # finished shards untouched
    new = sorted(set(after) - set(before))
    assert new == ["00003.parquet", "00003.tar", "00003_stats.json"]  # the new success, in a new shard
    rows = read_folder(folder, 4)
    assert [r["status"] for r in rows if r["url"] == urls[4]] == ["failed_to_download", "success"]
    records = manifest(out)
    assert records[urls[4]]["status"] == "ok" and records[urls[4]]["shard"] == "00003.tar"
    assert all(r["status"] == "skipped" and r["worker"]["out"] == folder and r["key"]
               for u, r in records.items() if u != urls[4])


def test_status_shows_the_shards_of_a_serve_run(server, cluster, tmp_path, capsys):
    urls = [server.url(f"/img/s{i}.png?format=png&w=20&h=20") for i in range(6)]
    pq.write_table(pa.table({"url": urls}), str(tmp_path / "in.parquet"))
    out = str(tmp_path / "srv")
    srv = cluster.serve(str(tmp_path / "in.parquet"), out, "--output-format", "webdataset", "--shard-size", "2",
                        "--delay", "0.3")
    worker = cluster.work(srv.address, str(tmp_path / "w1"), "--pool", "1")
    stats = wait_until(lambda: (cluster.stats(srv.address).get("shards") or {}).get("done"), 60, "a finished shard")
    assert stats >= 1
    from fetcher.cli.distributed import describe_stats

    lines = describe_stats("x", cluster.stats(srv.address))
    assert any(line.startswith("webdataset shards: ") and "finished" in line for line in lines), lines
    assert srv.wait(120) == 0 and worker.wait() == 0
    from fetcher.cli.main import main

    assert main(["status", "-o", out]) == 0
    assert "webdataset across hosts: 3 shards finished (6 rows) in 1 worker folder: " in capsys.readouterr().out


def test_a_per_host_cap_of_one_holds_across_two_workers_building_shards(server, cluster, tmp_path):
    urls = [server.url(f"/img/p{i}.png?format=png&w=20&h=20&delay=0.15") for i in range(12)]
    pq.write_table(pa.table({"url": urls}), str(tmp_path / "in.parquet"))
    out, folders = str(tmp_path / "srv"), [str(tmp_path / "w1"), str(tmp_path / "w2")]
    srv = cluster.serve(str(tmp_path / "in.parquet"), out, "--output-format", "webdataset", "--shard-size", "3",
                        "--per-host", "1")
    joined = server.hold("/img/")  # until every worker has joined: else one could end the run alone
    workers = [cluster.work(srv.address, folder, "--pool", "4", name=f"w{i}") for i, folder in enumerate(folders)]
    cluster.wait_joined(srv.address, 2)
    joined.set()
    assert srv.wait(120) == 0 and [w.wait() for w in workers] == [0, 0]
    assert server.stats.snapshot()["max_active"] == 1  # the test server's own count of requests in flight
    rows, _ = every_row(folders, 3)
    assert sorted(r["url"] for r in rows) == sorted(urls)


def final_rows(folder: str, size: int) -> list[dict]:
    """The rows of the finished shards of ``folder`` (a killed worker's unfinished .part files are no shard)."""
    from shard_reader import check_shard

    stems = sorted(n[:-4] for n in os.listdir(folder) if re.fullmatch(r"\d{5}\.tar", n))
    return [row for stem in stems for row in check_shard(os.path.join(folder, stem), int(stem), size, False)]


def test_a_worker_killed_mid_shard_loses_nothing_and_no_sample_is_in_two_shards(server, cluster, tmp_path):
    urls = [server.url(f"/img/k{i}.png?format=png&w={20 + i % 7}&h=20") for i in range(48)]
    urls[5] = server.url("/status/404")  # a failed row too
    pq.write_table(pa.table({"url": urls, "n": list(range(48))}), str(tmp_path / "in.parquet"))
    out, folders = str(tmp_path / "srv"), [str(tmp_path / "w1"), str(tmp_path / "w2")]
    srv = cluster.serve(str(tmp_path / "in.parquet"), out, "--output-format", "webdataset", "--shard-size", "6",
                        "--retries", "0", "--delay", "0.08", "--lease-timeout", "2")
    w1 = cluster.work(srv.address, folders[0], "--pool", "2", name="w1")
    wait_until(lambda: os.path.isdir(folders[0]) and any(n.endswith(".tar.part") for n in os.listdir(folders[0])),
               60, "w1 in the middle of a shard")
    w2 = cluster.work(srv.address, folders[1], "--pool", "2", name="w2")
    w1.kill()  # -9, in the middle of a shard: its rows are in no finished shard
    assert any(n.endswith(".tar.part") for n in os.listdir(folders[0]))
    assert srv.wait(180) == 1, srv.text()  # the 404
    assert w2.wait() == 0
    assert "given up, its" in srv.text()
    rows = final_rows(folders[0], 6) + final_rows(folders[1], 6)
    assert sorted(r["url"] for r in rows) == sorted(urls)  # every input row once, in one final shard
    assert sorted(r["n"] for r in rows) == list(range(48))
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys))
    records = manifest(out)
    assert {u: r["key"] for u, r in records.items()} == {r["url"]: r["key"] for r in rows}
    assert all(records[r["url"]]["worker"]["out"] == f for f in folders for r in final_rows(f, 6)
               if r["status"] == "success")


class _Connection:
    """A worker's ServerConnection, calling a Coordinator in this process."""

    def __init__(self, coordinator, worker_id: str) -> None:
        self.coordinator, self.worker_id = coordinator, worker_id

    def exchange(self, reports, seen):
        return self.coordinator.exchange(self.worker_id, reports, seen)


class _LossyConnection(_Connection):
    """The first reply is lost on the way (LinkError after the call); every later one comes twice."""

    def __init__(self, coordinator, worker_id: str) -> None:
        super().__init__(coordinator, worker_id)
        self.calls = 0

    def exchange(self, reports, seen):
        from fetcher.errors import LinkError

        self.calls += 1
        orders = super().exchange(reports, seen)
        if self.calls == 1:
            raise LinkError("the reply was lost")
        return orders + orders


def _staged(folder, name: str) -> tuple[str, int, str]:
    import hashlib

    from server import real_image

    body = real_image(name, "png", 20, 10)
    os.makedirs(os.path.join(folder, "staging"), exist_ok=True)
    with open(os.path.join(folder, "staging", name + ".png"), "wb") as handle:
        handle.write(body)
    return f"staging/{name}.png", len(body), hashlib.sha256(body).hexdigest()


def test_shard_orders_survive_a_lost_reply_a_reader_that_is_not_the_worker_and_come_once(tmp_path):
    """The manager broker keeps a worker's orders until the worker says it saw them: a caller reading the
    mailbox under the worker's id (a forger with the key) and a reply lost on the way lose none, and an
    order delivered twice is carried out once. Before, the reader took them: the shard was given up."""
    from fetcher.distributed.manager.coordinator import Coordinator
    from fetcher.distributed.protocol import RunRules, WorkerInfo
    from fetcher.distributed.serve_shards import ServeShards
    from fetcher.distributed.shard_worker import WorkerShards
    from fetcher.errors import LinkError
    from fetcher.models import Result, Status
    from fetcher.options import Options

    coordinator = Coordinator(RunRules({}), "run", 7, lease_timeout=60.0)
    folder = str(tmp_path / "w1")
    coordinator.hello(PROTOCOL, __import__("fetcher").__version__, WorkerInfo("w1", "h", 1, folder, "thread", 2, 4))
    notes: list[str] = []
    options = Options.create(out=str(tmp_path / "srv"), output_format="webdataset", shard_size=2)
    step = ServeShards(options, coordinator, notes.append).open()
    shards, link = WorkerShards(folder, lambda event: None), _LossyConnection(coordinator, "w1")
    label = {"id": "w1", "host": __import__("socket").gethostname(), "out": folder}
    for i in range(2):
        path, size, digest = _staged(folder, f"s{i}")
        step.add(Result(url=f"http://h/{i}.png", status=Status.OK, path=path, bytes=size, sha256=digest, index=i,
                        extra={"worker": label, "width": 20, "height": 10}))
    stolen = coordinator.exchange("w1", [])  # someone else, under w1's id
    assert [order["op"] for order in stolen] == ["rows", "seal"]
    assert stolen[0]["seq"] < stolen[1]["seq"]
    with pytest.raises(LinkError):
        shards.exchange(link)  # the reply is lost: nothing carried out
    assert not os.path.exists(os.path.join(folder, "00000.tar.part"))
    for _ in range(4):  # each reply twice: carried out once (a second "rows" would make 4 rows, a broken seal)
        shards.exchange(link)
        step.wait_for_more(0.0)
    assert shard_files(folder) == ["00000.parquet", "00000.tar", "00000_stats.json"]
    assert sorted(r["url"] for r in read_folder(folder, 2)) == ["http://h/0.png", "http://h/1.png"]
    assert step.index.counts() == (1, 2) and not [n for n in notes if "given up" in n]
    assert coordinator.exchange("w1", [], shards._seen) == []  # all seen: the mailbox is empty
    step.close(True)


def test_a_forged_order_numbered_past_the_real_ones_hides_none_of_them(tmp_path):
    """A well-formed order with a high seq (a Redis user can push one) is carried out, and the real
    orders after it still are: before, the worker took every lower seq as seen and the run hung."""
    from fetcher.distributed.manager.coordinator import Coordinator
    from fetcher.distributed.protocol import RunRules, WorkerInfo
    from fetcher.distributed.serve_shards import ServeShards
    from fetcher.distributed.shard_worker import WorkerShards
    from fetcher.models import Result, Status
    from fetcher.options import Options

    coordinator = Coordinator(RunRules({}), "run", 7, lease_timeout=60.0)
    folder = str(tmp_path / "w1")
    coordinator.hello(PROTOCOL, __import__("fetcher").__version__, WorkerInfo("w1", "h", 1, folder, "thread", 2, 4))
    step = ServeShards(Options.create(out=str(tmp_path / "srv"), output_format="webdataset", shard_size=2),
                       coordinator, lambda line: None).open()
    coordinator._mail["w1"] = [{"op": "abort", "shard": 3, "token": "forged", "seq": (7 << 32) + (1 << 32) - 1}]
    label = {"id": "w1", "host": __import__("socket").gethostname(), "out": folder}
    for i in range(2):
        path, size, digest = _staged(folder, f"s{i}")
        step.add(Result(url=f"http://h/{i}.png", status=Status.OK, path=path, bytes=size, sha256=digest, index=i,
                        extra={"worker": label, "width": 20, "height": 10}))
    shards = WorkerShards(folder, lambda event: None)
    for _ in range(3):
        shards.exchange(_Connection(coordinator, "w1"))
        step.wait_for_more(0.0)
    assert shard_files(folder) == ["00000.parquet", "00000.tar", "00000_stats.json"]
    step.close(True)


def test_orders_of_two_serves_read_twice_are_each_carried_out_once(tmp_path, monkeypatch):
    """A Redis mailbox may hold an earlier serve's orders before the new one's; read twice (a MULTI that
    failed), each is still carried out once, whatever its epoch."""
    from fetcher.distributed.shard_worker import WorkerShards

    done: list[tuple[int, int]] = []
    shards = WorkerShards(str(tmp_path / "w1"), lambda event: None)
    monkeypatch.setattr(shards, "_carry_out", lambda order: done.append((order["seq"] >> 32, order["shard"])))
    mail = [{"op": "abort", "shard": shard, "token": f"{epoch}.{shard}.x", "seq": (epoch << 32) + shard}
            for epoch, shard in ((7, 1), (7, 2), (8, 1), (3, 5))]

    class Twice:
        def exchange(self, reports, seen):
            return list(mail)

    for _ in range(2):
        shards.exchange(Twice())
    assert done == [(7, 1), (7, 2), (8, 1), (3, 5)]


def test_a_late_workers_report_on_a_shard_serve_gave_up_on_is_refused(tmp_path):
    import time

    from fetcher.distributed.manager.coordinator import Coordinator
    from fetcher.distributed.protocol import RunRules, WorkerInfo
    from fetcher.distributed.serve_shards import ServeShards
    from fetcher.distributed.shard_worker import WorkerShards
    from fetcher.models import Result, Status
    from fetcher.options import Options

    clock = [1000.0]
    coordinator = Coordinator(RunRules({}), "run", 1, lease_timeout=5.0, clock=lambda: clock[0])
    folders = {w: str(tmp_path / w) for w in ("w1", "w2")}
    for worker_id, folder in folders.items():
        coordinator.hello(PROTOCOL, __import__("fetcher").__version__, WorkerInfo(worker_id, "h", 1, folder, "thread", 2, 4))
    notes: list[str] = []
    options = Options.create(out=str(tmp_path / "srv"), output_format="webdataset", shard_size=2)
    step = ServeShards(options, coordinator, notes.append).open()
    workers = {w: WorkerShards(folder, lambda event: None) for w, folder in folders.items()}

    def result(i: int, worker: str) -> Result:
        path, size, digest = _staged(folders[worker], f"s{i}")
        return Result(url=f"http://h/{i}.png", status=Status.OK, path=path, bytes=size, sha256=digest, index=i,
                      extra={"worker": {"id": worker, "host": "h", "out": folders[worker]}, "width": 20, "height": 10})

    assert step.add(result(0, "w1")) is None and step.add(result(1, "w1")) is None  # held: shard 0 sealed
    workers["w1"].exchange(_Connection(coordinator, "w1"))  # rows and seal carried out: its report waits
    assert sorted(os.listdir(folders["w1"])) == ["00000.parquet.part", "00000.tar.part", "00000_stats.json.part",
                                                 "staging"]
    clock[0] += 100  # w1 goes silent; w2 keeps calling
    coordinator.exchange("w2", [])
    time.sleep(0.3)
    assert step.wait_for_more(0.0) is True  # shard 0 given up: its two rows are to be done again
    assert any("given up" in note for note in notes)
    redo = [next(step.rejoin(iter([]))) for _ in range(2)]
    assert sorted(r.url for r in redo) == ["http://h/0.png", "http://h/1.png"]

    workers["w1"].exchange(_Connection(coordinator, "w1"))  # back late: its "written" goes, the abort comes
    step.wait_for_more(0.0)
    assert any("refused shard 00000 from worker w1" in note for note in notes)
    workers["w1"].exchange(_Connection(coordinator, "w1"))
    assert shard_files(folders["w1"]) == [] and not [n for n in os.listdir(folders["w1"]) if n.endswith(".part")]
    assert step.index.counts() == (0, 0)  # nothing of it counts

    for i, again in enumerate(redo):  # done again by w2: a shard of a new id, recorded
        assert step.add(result(i, "w2")) is None
    for _ in range(3):
        step.wait_for_more(0.0)
        workers["w2"].exchange(_Connection(coordinator, "w2"))
    assert shard_files(folders["w2"]) == ["00001.parquet", "00001.tar", "00001_stats.json"]
    assert step.index.counts() == (1, 2)
    assert coordinator.stats()["shards"]["stale"] == 1
    step.close(True)


def test_a_worker_started_in_a_killed_workers_folder_finishes_what_serve_recorded_and_drops_the_rest(tmp_path):
    """Whole .part files of a shard serve recorded (killed between the commit and the renames) are renamed;
    those of a shard it did not record, and partial ones, are deleted."""
    from fetcher.distributed.manager.coordinator import Coordinator
    from fetcher.distributed.protocol import RunRules, WorkerInfo
    from fetcher.distributed.serve_shards import ServeShards
    from fetcher.distributed.shard_worker import WorkerShards
    from fetcher.models import Result, Status
    from fetcher.options import Options

    coordinator = Coordinator(RunRules({}), "run", 1, lease_timeout=60.0)
    folder = str(tmp_path / "w1")
    coordinator.hello(PROTOCOL, __import__("fetcher").__version__, WorkerInfo("w1", "h", 1, folder, "thread", 2, 4))
    options = Options.create(out=str(tmp_path / "srv"), output_format="webdataset", shard_size=1)
    step = ServeShards(options, coordinator, lambda line: None).open()
    label = {"id": "w1", "host": __import__("socket").gethostname(), "out": folder}
    shards = WorkerShards(folder, lambda event: None)
    for i in range(2):
        path, size, digest = _staged(folder, f"s{i}")
        step.add(Result(url=f"http://h/{i}.png", status=Status.OK, path=path, bytes=size, sha256=digest, index=i,
                        extra={"worker": label, "width": 20, "height": 10}))
    shards.exchange(_Connection(coordinator, "w1"))  # both written as .part, reports waiting
    coordinator.exchange("w1", [shards._reports[0]])  # serve hears of shard 0 only ...
    step.wait_for_more(0.0)  # ... records it and orders the renames: the worker is killed before it hears
    assert step.index.counts() == (1, 1)
    with open(os.path.join(folder, "00007.tar.part"), "wb") as handle:
        handle.write(b"half a shard")
    again = WorkerShards(folder, lambda event: None)  # `fetcher work` started again in that folder
    assert not os.path.exists(os.path.join(folder, "00007.tar.part"))
    coordinator._mail.clear()  # the killed worker's orders are nobody's now
    for _ in range(2):
        again.exchange(_Connection(coordinator, "w1-again"))
        step.wait_for_more(0.0)
    assert shard_files(folder) == ["00000.parquet", "00000.tar", "00000_stats.json"]
    assert not [n for n in os.listdir(folder) if n.endswith(".part")]
    read_folder(folder, 1)
    step.close(True)


@pytest.mark.parametrize("message", [
    None, [], {"op": "rows"}, {"op": "rows", "shard": -1, "token": "t", "rows": []},
    {"op": "rows", "shard": 1, "token": "t", "rows": [{"key": "1", "path": "../x", "row": {}}]},
    {"op": "rows", "shard": 1, "token": "t", "rows": [{"key": "a1", "path": None, "row": {}}]},
    {"op": "rows", "shard": 1, "token": "t", "rows": [{"key": "1", "path": "/etc/passwd", "row": {}}]},
    {"op": "seal", "shard": 1, "token": "t", "count": True}, {"op": "commit", "shard": "1", "token": "t"},
    {"op": "abort", "shard": 1, "token": 5}, {"op": "written", "shard": 1, "token": "t", "count": 1},
    # well shaped, hostile inside (each crashed `fetcher work` before: KeyError, ArrowInvalid at seal)
    *({"op": "rows", "shard": 1, "token": "t", "rows": [{"key": "1", "path": None, "row": row}]} for row in (
        {}, {"status": "x", "error_message": "e"}, {"status": "failed_to_download", "error_message": None},
        {"status": "failed_to_download", "error_message": "e", "width": "abc"},
        {"status": "success", "error_message": None, "width": True},
        {"status": "success", "error_message": None, "height": 2 ** 31},
        {"status": "success", "error_message": None, "sha256": 5}, {1: "x", "status": "success"}))])
def test_a_malformed_shard_order_is_a_wire_error(message):
    from fetcher.distributed.calls import WireError, check_order

    with pytest.raises(WireError):
        check_order({"seq": 5, **message} if isinstance(message, dict) else message)


@pytest.mark.parametrize("seq", [None, 0, -1, True, "5", 5.0, 1 << 64])
def test_a_shard_order_without_its_number_is_a_wire_error(seq):
    from fetcher.distributed.calls import WireError, check_order

    order = {"op": "seal", "shard": 1, "token": "t", "count": 2}
    assert check_order({**order, "seq": (7 << 32) + 1})["seq"] == (7 << 32) + 1
    with pytest.raises(WireError):
        check_order(order if seq is None else {**order, "seq": seq})


def test_a_worker_that_cannot_write_its_shards_fails_the_rows_instead_of_looping(tmp_path, monkeypatch):
    """A full disk in a worker's folder: every seal is reported broken. Its rows used to be fetched and
    sharded again for ever (serve never ended, each round asking the host again); now a row whose
    shards were given up MAX_GIVE_UPS times is a failure (kind io), in the manifest, in no shard."""
    import errno

    from fetcher.distributed.manager.coordinator import Coordinator
    from fetcher.distributed.protocol import RunRules, WorkerInfo
    from fetcher.distributed.serve_shards import MAX_GIVE_UPS, ServeShards
    from fetcher.distributed.shard_worker import WorkerShards
    from fetcher.models import FetchTask, Result, Status
    from fetcher.options import Options
    from fetcher.run import shard_rows

    def full_disk(rows, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shard_rows, "write_parquet", full_disk)
    folder = str(tmp_path / "w1")
    coordinator = Coordinator(RunRules({}), "run", 1, lease_timeout=60.0)
    coordinator.hello(PROTOCOL, __import__("fetcher").__version__, WorkerInfo("w1", "h", 1, folder, "thread", 2, 4))
    notes: list[str] = []
    options = Options.create(out=str(tmp_path / "srv"), output_format="webdataset", shard_size=1)
    step = ServeShards(options, coordinator, notes.append).open()
    worker = WorkerShards(folder, lambda event: None)
    task = next(step.admit(iter([FetchTask(url="http://h/0.png", name="staging/s0.png", index=0)])))
    outcomes = []
    for _ in range(MAX_GIVE_UPS + 2):  # bounded: the old code redid it every round
        path, size, digest = _staged(folder, "s0")
        step.add(Result(url=task.url, status=Status.OK, path=path, bytes=size, sha256=digest, index=0,
                        extra={"worker": {"id": "w1", "host": "h", "out": folder}, "width": 20, "height": 10}))
        for _ in range(2):
            worker.exchange(_Connection(coordinator, "w1"))
        step.wait_for_more(0.0)
        outcome = next(step.rejoin(iter([])))
        outcomes.append(outcome)
        if isinstance(outcome, Result):
            break
    assert [type(o).__name__ for o in outcomes] == ["FetchTask"] * (MAX_GIVE_UPS - 1) + ["Result"]
    final = outcomes[-1]
    assert final.status is Status.FAILED and final.error.kind == "io" and "No space left" in final.error.message
    assert "key" not in final.extra and "shard" not in final.extra  # in no shard
    assert step.add(final) is final  # on to the journal and the manifest, not held
    assert step.wait_for_more(0.0) is False  # the run can end
    assert shard_files(folder) == [] and step.index.counts() == (0, 0)
    assert any("1 failed" in note for note in notes)
    step.close(True)


@pytest.mark.parametrize("reports", [
    None, {}, [None], [{"op": "seal", "shard": 1, "token": "t", "count": 1}],
    [{"op": "written", "shard": 1, "token": "t", "count": 1, "failed": {"1": 2}}],
    [{"op": "ask", "shard": 1, "host": "h"}], [{"op": "broken", "shard": 1, "token": "t"}],
    [{"op": "committed", "shard": 10 ** 13, "token": "t"}]])
def test_malformed_shard_reports_are_a_wire_error(reports):
    from fetcher.distributed.calls import WireError, check_call, check_reports

    with pytest.raises(WireError):
        check_reports(reports)
    with pytest.raises(WireError):
        check_call(("exchange", ("w1", reports)))


def test_serve_killed_mid_build_and_started_again_resumes_with_the_same_workers(server, cluster, tmp_path):
    from cluster import free_port

    urls = [server.url(f"/img/z{i}.png?format=png&w={20 + i % 5}&h=20&delay=0.05") for i in range(40)]
    pq.write_table(pa.table({"url": urls}), str(tmp_path / "in.parquet"))
    out, folders = str(tmp_path / "srv"), [str(tmp_path / "w1"), str(tmp_path / "w2")]
    args = ("--output-format", "webdataset", "--shard-size", "4", "--per-host", "2")
    port = free_port()
    first = cluster.serve(str(tmp_path / "in.parquet"), out, *args, port=port)
    joined = server.hold("/img/")  # until every worker has joined: else one could end the run alone before its first
    # serve is killed, or met the second serve after it had ended
    workers = [cluster.work(first.address, folder, "--pool", "2", name=f"w{i}") for i, folder in enumerate(folders)]
    cluster.wait_joined(first.address, 2)
    joined.set()
    wait_until(lambda: sum(n.endswith(".tar") for f in folders if os.path.isdir(f) for n in os.listdir(f)) >= 2,
               60, "two finished shards")
    first.kill()  # -9: the rows it held for open shards never reached its journal
    kept = {os.path.join(f, n): os.path.getmtime(os.path.join(f, n))
            for f in folders if os.path.isdir(f) for n in shard_files(f)}
    again = cluster.serve(str(tmp_path / "in.parquet"), out, *args, port=port, name="serve2")
    assert again.wait(180) == 0, again.text()
    assert [w.wait() for w in workers] == [0, 0]
    for path, mtime in kept.items():
        assert os.path.getmtime(path) == mtime  # finished shards kept as they were
    rows = final_rows(folders[0], 4) + final_rows(folders[1], 4)
    assert sorted(r["url"] for r in rows) == sorted(urls)  # every row once, across the two serve runs
    assert sorted(manifest(out)) == sorted(urls)
    for folder in folders:
        read_folder(folder, 4)  # and nothing unfinished left behind


def test_a_call_before_hello_leaves_no_placeholder_label_on_the_workers_results():
    """A call under a worker's id before its hello (a forger reading its mail) made a placeholder worker
    labelled host "?" out "?"; the hello replaced its info but not the label every result carries, so the
    manifest said the files were held by "?" in "?" (found in review, /work/review2/stale_label.py)."""
    from fetcher.distributed.manager.coordinator import Coordinator
    from fetcher.distributed.protocol import Grant, RunRules, WorkerInfo
    from fetcher.models import FetchTask, Result, Status

    coordinator = Coordinator(RunRules({}), "run", 7, lease_timeout=60.0)
    coordinator.exchange("w1", [], 0)
    info = WorkerInfo("w1", "hostA", 1, "/data/w1", "thread", 2, 4)
    coordinator.hello(PROTOCOL, __import__("fetcher").__version__, info)
    coordinator.offer(FetchTask(url="http://h/a.png", name="a.png", index=0))
    grant = coordinator.lease("w1", 1)
    assert isinstance(grant, Grant)
    (lease_id, task), = grant.leases
    coordinator.complete("w1", [(lease_id, Result(url=task.url, status=Status.OK, path="a.png", bytes=1, index=0))])
    (result,) = coordinator.collect(0)
    assert result.extra["worker"] == {"id": "w1", "host": "hostA", "out": "/data/w1"}
