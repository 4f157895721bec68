"""Image datasets across hosts: ``fetcher serve`` takes the dataset flags, workers check and resize.

Each test runs once per broker (manager and a real redis-server), as tests/test_distributed.py's do.
"""

from __future__ import annotations

import io
import os

import pytest
from cluster import cluster_on, manifest


Image = pytest.importorskip("PIL.Image")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")


@pytest.fixture(params=["manager", "redis"])
def cluster(request, tmp_path):
    with cluster_on(request.param, tmp_path) as running:
        yield running


def test_workers_check_and_resize_where_they_download(server, cluster, tmp_path):
    urls = [server.url(f"/img/d{i}.jpg?w={50 + i}&h=40") for i in range(10)]
    tiny = server.url("/img/tiny.png?format=png&w=6&h=6")
    pq.write_table(pa.table({"URL": urls + [tiny], "TEXT": [f"t{i}" for i in range(11)]}), str(tmp_path / "in.parquet"))
    out, folders = str(tmp_path / "srv"), [str(tmp_path / "w1"), str(tmp_path / "w2")]
    srv = cluster.serve(str(tmp_path / "in.parquet"), out, "--url-column", "URL", "--resize", "32", "--resize-mode",
                        "center_crop", "--encode-format", "webp", "--min-image-size", "10",
                        "--manifest-format", "parquet")
    joined = server.hold("/img/")  # until every worker has joined: else one could end the run alone
    workers = [cluster.work(srv.address, folder, "--pool", "2", name=f"w{i}") for i, folder in enumerate(folders)]
    cluster.wait_joined(srv.address, 2)
    joined.set()
    assert srv.wait(120) == 1  # the tiny image failed
    assert all(w.wait() == 0 for w in workers)
    records = manifest(out)
    assert set(records) == set(urls) | {tiny}
    assert records[tiny]["error"]["kind"] == "image-too-small"
    for i, url in enumerate(urls):
        record = records[url]
        assert (record["width"], record["height"], record["input"]) == (50 + i, 40, {"TEXT": f"t{i}"})
        assert record["path"].endswith(".webp")
        with open(os.path.join(record["worker"]["out"], record["path"]), "rb") as handle:
            stored = handle.read()
        assert len(stored) == record["bytes"] and Image.open(io.BytesIO(stored)).size == (32, 32)
    assert pq.read_table(os.path.join(out, "manifest.parquet")).num_rows == 11

