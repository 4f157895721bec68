"""The CLI end to end against the real loopback server (thread backend).

The contract suite (test_contract.py) runs the shared behaviour on every
backend; this file covers what is about the command itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys

import pytest
from conftest import write_list
from server import body_for

from fetcher.cli.main import main


def manifest(out: str, name: str = "manifest.jsonl") -> dict[str, dict]:
    with open(os.path.join(out, name), encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    by_url = {r["url"]: r for r in records}
    assert len(by_url) == len(records), "one record per URL"
    return by_url


def all_files(root: str) -> list[str]:
    """Every file under root, but the journal's folder."""
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                  if ".fetcher" not in os.path.relpath(d, root).split(os.sep))


def test_downloads_every_url_and_writes_the_manifest(server, out, tmp_path, capsys, setup):
    urls = [server.url(f"/files/img{i}.jpg?size={1000 + i * 37}") for i in range(40)]
    args = [write_list(tmp_path, ["# my list", ""] + urls + urls[:5]), "-o", out, "--pool", "8", *setup]
    assert main(args) == 0
    records = manifest(out)
    assert set(records) == set(urls)
    for i, url in enumerate(urls):
        record = records[url]
        expected = body_for(f"img{i}.jpg", 1000 + i * 37)
        assert record["status"] == "ok" and record["error"] is None
        assert record["bytes"] == len(expected) and record["http_status"] == 200
        assert record["sha256"] == hashlib.sha256(expected).hexdigest()
        assert record["attempts"] == 1 and record["elapsed_s"] >= 0
        with open(os.path.join(out, record["path"]), "rb") as handle:
            assert handle.read() == expected
    assert not [f for f in all_files(out) if f.endswith(".part")]
    summary = capsys.readouterr().out
    assert "40 ok, 0 failed" in summary and "5 duplicate" in summary
    assert sum(server.stats.requests.values()) == 40  # duplicates fetched once


def test_failures_are_reported_and_the_rest_still_runs(server, out, tmp_path, capsys, setup):
    good = server.url("/files/good.png")
    lines = [good, server.url("/status/404"), server.url("/status/500"), server.url("/reset/r"),
             server.url("/truncate/t?size=5000"), "file:///etc/passwd", "not a url", "ftp://h/x"]
    assert main([write_list(tmp_path, lines), "-o", out, "--retries", "1", "--timeout", "5",
                 *setup]) == 1
    records = manifest(out)
    assert len(records) == len(lines)
    kinds = {url: (r["error"] or {}).get("kind") for url, r in records.items()}
    assert kinds == {
        good: None,
        server.url("/status/404"): "http-status",
        server.url("/status/500"): "http-status",
        server.url("/reset/r"): "connect",
        server.url("/truncate/t?size=5000"): "truncated",
        "file:///etc/passwd": "unsupported-scheme",
        "not a url": "invalid-url",
        "ftp://h/x": "unsupported-scheme",
    }
    assert records[server.url("/status/404")]["attempts"] == 1  # permanent: not retried
    assert records[server.url("/status/500")]["attempts"] == 2  # transient: retried once
    assert server.stats.requests["/status/500"] == 2
    for record in records.values():
        if record["status"] == "failed":
            assert record["path"] is None and record["sha256"] is None
    assert all_files(out) == sorted(["manifest.jsonl", records[good]["path"]])
    printed = capsys.readouterr().out  # per-URL lines are the run's report: standard output
    assert "failed " + server.url("/status/404") in printed


def test_transient_failures_recover_on_retry(server, out, tmp_path):
    url = server.url("/flaky/f.jpg?fail=2")
    assert main([write_list(tmp_path, [url]), "-o", out, "--retries", "3"]) == 0
    assert manifest(out)[url]["attempts"] == 3


def test_no_retries_means_one_attempt(server, out, tmp_path):
    url = server.url("/flaky/f.jpg?fail=1")
    assert main([write_list(tmp_path, [url]), "-o", out, "--retries", "0"]) == 1
    assert server.stats.requests["/flaky/f.jpg"] == 1


def test_reads_stdin_and_moves_the_manifest(server, out, tmp_path, monkeypatch):
    url = server.url("/files/a.jpg")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f"{url}\n".encode())))
    elsewhere = tmp_path / "reports" / "run.jsonl"
    assert main(["-", "-o", out, "--manifest", str(elsewhere), "-q"]) == 0
    with open(elsewhere, encoding="utf-8") as handle:
        assert json.loads(handle.read())["url"] == url
    assert not os.path.exists(os.path.join(out, "manifest.jsonl"))


def test_urls_that_try_to_climb_out_stay_inside(server, out, tmp_path):
    urls = [server.url("/files/..%2F..%2F..%2Fescape.jpg"), server.url("/files/%2e%2e/%2e%2e/x.jpg"),
            server.url("/files/a/..%5C..%5Cwin.ini")]
    main([write_list(tmp_path, urls), "-o", out, "-q"])
    outside = [p for p in os.listdir(tmp_path) if p not in {"out", "urls.txt"}]
    assert outside == []
    for record in manifest(out).values():
        if record["path"]:
            full = os.path.realpath(os.path.join(out, record["path"]))
            assert full.startswith(os.path.realpath(out) + os.sep)


def test_quiet_prints_nothing(server, out, tmp_path, capsys):
    assert main([write_list(tmp_path, [server.url("/files/q.jpg")]), "-o", out, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_verbose_lists_successes(server, out, tmp_path, capsys):
    assert main([write_list(tmp_path, [server.url("/files/v.jpg")]), "-o", out, "--verbose"]) == 0
    assert "ok " + server.url("/files/v.jpg") in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--pool", "0"], "--pool: must be at least 1"),
    (["--pool", "many"], "--pool: 'many' is not a whole number"),
    (["--timeout", "soon"], "timeout must be"),
    (["--retries", "-1"], "--retries"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_flags_exit_2_with_one_readable_line(server, out, tmp_path, capsys, args, message):
    path = write_list(tmp_path, [server.url("/files/a.jpg")])
    assert main([path, "-o", out, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fetcher: error:") and message in err
    assert "Traceback" not in err
    assert sum(server.stats.requests.values()) == 0
    assert not os.path.exists(out)


def test_missing_input_file_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing.txt"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot read URL list" in err and err.count("\n") == 1


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("fetcher ")
    assert main(["--help"]) == 0
    assert "--backend" in capsys.readouterr().out


def test_python_dash_m_works_the_same(server, tmp_path):
    out = str(tmp_path / "out")
    path = write_list(tmp_path, [server.url("/files/m.jpg"), server.url("/status/404")])
    done = subprocess.run([sys.executable, "-m", "fetcher", path, "-o", out], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "1 ok, 1 failed" in done.stdout
    assert "Traceback" not in done.stderr
    bad = subprocess.run([sys.executable, "-m", "fetcher", path, "--pool", "0"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
