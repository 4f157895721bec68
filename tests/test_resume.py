"""The journal and resume: reruns skip what is done, finish what is not, never corrupt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import write_list
from proc_helpers import files_in_place
from server import body_for

from fetcher.cli.main import main
from fetcher.run.runner import _exclusive


def records(out: str) -> dict[str, dict]:
    with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    by_url = {r["url"]: r for r in rows}
    assert len(by_url) == len(rows)
    return by_url


def leftovers(out: str) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if ".part" in f]


def test_a_rerun_skips_completed_urls_without_requests(server, out, tmp_path):
    urls = [server.url(f"/files/r{i}.jpg?size=3000") for i in range(10)]
    path = write_list(tmp_path, urls)
    assert main([path, "-o", out, "-q"]) == 0
    assert main([path, "-o", out, "-q"]) == 0
    assert sum(server.stats.requests.values()) == 10
    rerun = records(out)
    assert {r["status"] for r in rerun.values()} == {"skipped"}
    first = rerun[urls[0]]
    assert first["bytes"] == 3000 and first["path"] and first["sha256"] and first["attempts"] == 0


def test_files_deleted_or_truncated_by_hand_are_fetched_again(server, out, tmp_path):
    urls = [server.url(f"/files/t{i}.jpg?size=3000") for i in range(3)]
    path = write_list(tmp_path, urls)
    assert main([path, "-o", out, "-q"]) == 0
    first = records(out)
    with open(os.path.join(out, first[urls[0]]["path"]), "r+b") as handle:
        handle.truncate(100)
    os.remove(os.path.join(out, first[urls[1]]["path"]))
    assert main([path, "-o", out, "-q"]) == 0
    second = records(out)
    assert [second[u]["status"] for u in urls] == ["ok", "ok", "skipped"]
    assert [server.stats.requests[f"/files/t{i}.jpg"] for i in range(3)] == [2, 2, 1]
    for i, url in enumerate(urls):
        with open(os.path.join(out, second[url]["path"]), "rb") as handle:
            assert handle.read() == body_for(f"t{i}.jpg", 3000)


def test_failed_urls_are_retried_on_a_rerun_unless_told_not_to(server, out, tmp_path):
    bad = server.url("/status/404")
    path = write_list(tmp_path, [bad, server.url("/files/ok.jpg")])
    assert main([path, "-o", out, "-q"]) == 1
    assert main([path, "-o", out, "-q", "--no-retry-failed"]) == 1
    assert server.stats.requests["/status/404"] == 1
    assert records(out)[bad]["status"] == "failed"
    assert records(out)[bad]["error"]["kind"] == "http-status"
    assert main([path, "-o", out, "-q"]) == 1
    assert server.stats.requests["/status/404"] == 2


def test_an_interrupted_download_resumes_with_range(server, out, tmp_path, setup):
    url = server.url("/ranged/big.bin?size=2000000&cut=700000")
    assert main([write_list(tmp_path, [url]), "-o", out, "-q", "--backoff", "0", *setup]) == 0
    assert server.stats.ranges["/ranged/big.bin"] == [None, "bytes=700000-"]
    record = records(out)[url]
    assert record["attempts"] == 2 and record["bytes"] == 2000000
    with open(os.path.join(out, record["path"]), "rb") as handle:
        assert handle.read() == body_for("v1-big.bin", 2000000)
    assert leftovers(out) == []


def test_a_server_that_ignores_range_restarts_cleanly(server, out, tmp_path, setup):
    url = server.url("/ranged/ign.bin?size=500000&cut=200000&ignore_range=1")
    assert main([write_list(tmp_path, [url]), "-o", out, "-q", "--backoff", "0", *setup]) == 0
    record = records(out)[url]
    with open(os.path.join(out, record["path"]), "rb") as handle:
        assert handle.read() == body_for("v1-ign.bin", 500000)


def test_a_changed_etag_restarts_with_the_new_file(server, out, tmp_path, setup):
    url = server.url("/ranged/chg.bin?size=500000&cut=200000&change_after=1")
    assert main([write_list(tmp_path, [url]), "-o", out, "-q", "--backoff", "0", *setup]) == 0
    assert server.stats.ranges["/ranged/chg.bin"][1] == "bytes=200000-"  # asked, but If-Range failed
    record = records(out)[url]
    with open(os.path.join(out, record["path"]), "rb") as handle:
        assert handle.read() == body_for("v2-chg.bin", 500000)


def test_kill_9_then_rerun_loses_and_repeats_nothing(server, out, tmp_path):
    fast = [server.url(f"/files/k{i}.jpg?size=2000") for i in range(30)]
    slow = [server.url(f"/slow/s{i}.jpg?delay=30") for i in range(4)]
    path = write_list(tmp_path, fast + slow)
    command = [sys.executable, "-m", "fetcher", path, "-o", out, "-q", "--pool", "4"]
    proc = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 60
        while files_in_place(out) < len(fast):  # state, not a sleep past the flush: a loaded machine is slow
            assert time.monotonic() < deadline, "the first run never saved the fast URLs"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert main([path.replace("urls.txt", "urls.txt"), "-o", out, "-q", "--pool", "4",
                 "--timeout", "0.3", "--retries", "0"]) == 1  # the slow ones time out on the rerun
    assert all(server.stats.requests[f"/files/k{i}.jpg"] == 1 for i in range(30))
    final = records(out)
    assert len(final) == len(fast) + len(slow)
    for i, url in enumerate(fast):
        record = final[url]
        assert record["status"] in ("ok", "skipped")
        with open(os.path.join(out, record["path"]), "rb") as handle:
            assert handle.read() == body_for(f"k{i}.jpg", 2000)
    assert leftovers(out) == []


def test_status_reports_the_journal(server, out, tmp_path, capsys):
    path = write_list(tmp_path, [server.url("/files/a.jpg"), server.url("/status/404")])
    main([path, "-o", out, "-q"])
    capsys.readouterr()
    assert main(["status", "-o", out]) == 0
    printed = capsys.readouterr().out
    assert "2 URLs: 1 ok, 1 failed, 0 pending" in printed
    assert "http-status 1" in printed
    assert main(["status", "-o", str(tmp_path / "nothing-here")]) == 2


def test_one_folder_one_run(server, out, tmp_path, capsys):
    path = write_list(tmp_path, [server.url("/files/a.jpg")])
    with _exclusive(out):
        assert main([path, "-o", out]) == 2
    assert "in use by another fetcher run" in capsys.readouterr().err
    assert sum(server.stats.requests.values()) == 0
