"""serve's figures reconcile with the manifest, on both brokers (issue 23, item 7): its closing
summary lists each worker id with the number of manifest records it produced, they add up to the
manifest, the pool is reported per worker, and status's lease figures agree with each other."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from cluster import cluster_on, manifest, wait_until
from conftest import write_list


@pytest.fixture(params=["manager", "redis"])
def cluster(request, tmp_path):
    with cluster_on(request.param, tmp_path) as running:
        yield running


def test_closing_summary_counts_each_workers_manifest_records(server, cluster, tmp_path):
    urls = ([server.url(f"/slow/f{i}.bin?delay=0.2&size=2000") for i in range(30)]
            + [server.url(f"/status/404?n={i}") for i in range(3)] + ["not a url"])
    out = str(tmp_path / "srv")
    srv = cluster.serve(write_list(tmp_path, urls), out, "--retries", "0")
    joined = server.hold("/slow/")  # until both have joined: else one could end the run alone
    workers = [cluster.work(srv.address, str(tmp_path / name), "--pool", pool, name=name)
               for name, pool in (("w1", "3"), ("w2", "5"))]
    address = srv.address
    cluster.wait_joined(address, 2)
    joined.set()
    stats = wait_until(lambda: (s := cluster.stats(address)) and s.get("leased", 0) > 0 and s, what="leases out")
    assert stats["counts"].get("leased", 0) >= stats["leased"] > 0  # handed out in all >= held now
    assert srv.wait() == 1  # the 404s and the bad line failed
    assert [w.wait() for w in workers] == [0, 0]
    records = manifest(out)
    by_worker = Counter((r.get("worker") or {}).get("id") for r in records.values())
    text = srv.text()
    shown = {wid: int(n) for wid, n in re.findall(r"^  worker (\S+) \(\w+, pool \d+\): (\d+) records", text, re.M)}
    assert shown == {wid: n for wid, n in by_worker.items() if wid is not None}, text
    assert re.search(rf"^  no worker: {by_worker[None]} records?\b", text, re.M), text
    assert by_worker[None] == 1 and sum(shown.values()) + by_worker[None] == len(records) == len(urls)
    pools = sorted(int(p) for p in re.findall(r"^  worker \S+ \(\w+, pool (\d+)\)", text, re.M))
    assert pools == [3, 5] and "(pool 3 + 5 on 2 workers)" in text.replace("pool 5 + 3", "pool 3 + 5"), text
