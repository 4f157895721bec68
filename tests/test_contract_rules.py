"""The fetching rules and the journal hold on every backend, exactly as a user runs them.

Like test_contract.py, each case runs ``python -m fetcher`` in a subprocess
(gevent's patching stays there). The process backend runs under its default
start method only; test_contract.py covers fork and spawn.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import NEEDS_PYCURL, write_list
from proc_helpers import (RUN_TIMEOUT_S, Variant, cli_command, files_in_place, kill_group, part_files, read_manifest,
                          run_cli, wait_until)
from server import body_for

VARIANTS = [Variant("thread"), Variant("process"), Variant("gevent"),
            pytest.param(Variant("process", flags=("--client", "curl")), marks=NEEDS_PYCURL),
            pytest.param(Variant("gevent", flags=("--client", "curl")), marks=NEEDS_PYCURL)]


@pytest.fixture(params=VARIANTS, ids=lambda variant: variant.id if isinstance(variant, Variant) else None)
def variant(request: pytest.FixtureRequest) -> Variant:
    return request.param


def by_url(out: str) -> dict[str, dict]:
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    found = {r["url"]: r for r in records}
    assert len(found) == len(records), "a URL appears twice in the manifest"
    return found


def test_per_host_cap_holds_across_workers(variant, server, tmp_path, out) -> None:
    urls = [server.url(f"/slow/p{i}.bin?delay=0.15") for i in range(16)]
    done = run_cli(variant, [write_list(tmp_path, urls), "-o", out, "--pool", "8", "--per-host", "2", "-q"])
    assert done.returncode == 0, done.stderr
    assert server.stats.max_active <= 2


def test_retry_after_pauses_the_host_for_every_worker(variant, server, tmp_path, out) -> None:
    limited = server.url("/flaky/r.jpg?fail=1&code=429&retry_after=1")
    others = [server.url(f"/files/o{i}.jpg") for i in range(3)]
    done = run_cli(variant, [write_list(tmp_path, [limited, *others]), "-o", out, "--pool", "1", "-q"])
    assert done.returncode == 0, done.stderr
    assert by_url(out)[limited]["attempts"] == 2
    first = server.stats.times["/flaky/r.jpg"][0]
    later = [t for times in server.stats.times.values() for t in times if t > first]
    assert min(later) - first >= 0.9


def test_a_drip_is_cut_off_at_max_time(variant, server, tmp_path, out) -> None:
    drip = server.url("/drip/d.bin?size=1000&interval=0.2")  # would take 200 s
    done = run_cli(variant, [write_list(tmp_path, [drip, server.url("/files/ok.jpg")]), "-o", out,
                             "--max-time", "1", "-q"])
    assert done.returncode == 1, done.stderr
    assert by_url(out)[drip]["error"]["kind"] == "timeout"
    assert part_files(out) == []


def test_a_cut_download_resumes_with_range(variant, server, tmp_path, out) -> None:
    url = server.url("/ranged/big.bin?size=1000000&cut=300000")
    done = run_cli(variant, [write_list(tmp_path, [url]), "-o", out, "--backoff", "0", "-q"])
    assert done.returncode == 0, done.stderr
    assert server.stats.ranges["/ranged/big.bin"] == [None, "bytes=300000-"]
    with open(os.path.join(out, by_url(out)[url]["path"]), "rb") as handle:
        assert handle.read() == body_for("v1-big.bin", 1000000)


def test_kill_9_then_rerun_finishes_without_repeating(variant, server, tmp_path, out) -> None:
    fast = [server.url(f"/files/k{i}.jpg?size=2000") for i in range(20)]
    slow = [server.url(f"/slow/s{i}.jpg?delay=30") for i in range(2)]
    args = [write_list(tmp_path, fast + slow), "-o", out, "--pool", "4", "-q"]
    process = subprocess.Popen(cli_command(variant, args), env=variant.env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: files_in_place(out) >= len(fast) and server.stats.active >= 2,
                   what="the fast files in place and the slow ones in flight")
        os.killpg(process.pid, signal.SIGKILL)  # the coordinator and every worker, as a power cut would
        process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        kill_group(process)
    done = run_cli(variant, [*args, "--timeout", "0.5", "--retries", "0"])
    assert done.returncode == 1, done.stderr  # the slow ones time out on the rerun
    assert all(server.stats.requests[f"/files/k{i}.jpg"] == 1 for i in range(20))
    records = by_url(out)
    assert len(records) == len(fast) + len(slow)
    for i, url in enumerate(fast):
        assert records[url]["status"] in ("ok", "skipped")
        with open(os.path.join(out, records[url]["path"]), "rb") as handle:
            assert handle.read() == body_for(f"k{i}.jpg", 2000)
    assert part_files(out) == []
