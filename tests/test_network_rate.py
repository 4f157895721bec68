"""``--limit-rate``: one cap for the whole run, across every process of it.

A cap is behaviour, not speed: these tests assert only a lower bound on the time a run
takes (it cannot be beaten however idle the machine), never an upper one.
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import NEEDS_PYCURL, write_list
from proc_helpers import Variant, read_manifest, run_cli

from fetcher.download.ratelimit import BURST_S, RateLimit

SIZE, FILES, RATE = 256 * 1024, 4, 256 * 1024  # 1 MiB at 256 KiB/s: at least ~4 s however fast the loopback


@pytest.mark.parametrize("variant", [
    Variant("process", flags=("--processes", "2")),
    pytest.param(Variant("process", flags=("--client", "curl", "--processes", "2")), marks=NEEDS_PYCURL),
    pytest.param(Variant("gevent", flags=("--client", "curl")), marks=NEEDS_PYCURL),
    Variant("thread"),
], ids=lambda v: v.id)
def test_the_cap_holds_for_the_run_across_its_processes(server, variant, tmp_path, out) -> None:
    urls = [server.url(f"/files/r{i}.bin?size={SIZE}") for i in range(FILES)]
    done = run_cli(variant, [write_list(tmp_path, urls), "-o", out, "--pool", "4", "--limit-rate", "256K"])
    ended = time.monotonic()

    assert done.returncode == 0, done.stderr
    assert [r["bytes"] for r in read_manifest(os.path.join(out, "manifest.jsonl"))] == [SIZE] * FILES
    took = ended - min(t for times in server.stats.times.values() for t in times)
    # Two processes each with a cap of their own would take half of it.
    assert took >= SIZE * FILES / RATE - 2 * BURST_S - 0.5, took


def test_a_run_without_a_cap_writes_no_rate_file(server, tmp_path, out) -> None:
    done = run_cli(Variant("thread"), [write_list(tmp_path, [server.url("/files/x.bin")]), "-o", out])
    assert done.returncode == 0
    assert not os.path.exists(os.path.join(out, ".fetcher", "rate"))


def test_the_bucket_is_shared_through_its_file_and_forgets_a_stale_moment(tmp_path) -> None:
    path = str(tmp_path / "rate")
    first, second = RateLimit(1000, path), RateLimit(1000, path)  # two processes' views of one file
    try:
        start = time.time()
        first.take(100)  # 0.1 s of the cap: within the burst, no sleep
        second.take(100)  # the file says 0.2 s are spent: sleeps until only the burst is ahead
        assert time.time() - start >= 0.2 - BURST_S - 0.01
        with open(path, "r+b") as handle:
            handle.write(__import__("struct").pack("d", time.time() + 10_000))  # left by a run before a clock change
        before = time.time()
        first.take(10)
        assert time.time() - before < 1.0
    finally:
        first.close()
        second.close()


def test_each_fetcher_work_caps_itself_with_the_servers_rate(server, tmp_path) -> None:
    from cluster import Cluster

    urls = [server.url(f"/files/w{i}.bin?size={SIZE}") for i in range(FILES)]
    cluster = Cluster(tmp_path)
    try:
        srv = cluster.serve(write_list(tmp_path, urls), str(tmp_path / "srv"), "-q", "--limit-rate", "256K")
        worker = cluster.work(srv.address, str(tmp_path / "w"), "--backend", "process", "--pool", "4")
        assert srv.wait() == 0 and worker.wait() == 0
        ended = time.monotonic()
    finally:
        cluster.close()
    took = ended - min(t for times in server.stats.times.values() for t in times)
    assert took >= SIZE * FILES / RATE - 2 * BURST_S - 0.5, took
    assert os.path.exists(tmp_path / "w" / ".fetcher" / "rate")  # the worker's own bucket, in its own folder
