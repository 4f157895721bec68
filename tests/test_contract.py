"""One contract for every backend: the same input gives the same files, manifest and exit code.

Each case runs ``python -m fetcher`` in a subprocess against the loopback
server, so gevent's monkey-patching never reaches this process and every
backend is exercised exactly as a user runs it. The process backend runs under
its default start method and under fork and spawn explicitly.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
from conftest import NEEDS_PYCURL, write_list
from proc_helpers import (
    HAVE_PROC, RUN_TIMEOUT_S, Variant, cli_command, descendants, interrupt_group, kill_group, part_files,
    read_manifest, run_cli, still_running, wait_until,
)
from server import body_for

from fetcher.files.naming import name_for_url

# The fetcher command runs one thread, so "process" starts its workers with fork; forkserver
# and spawn are what a threaded parent (or FETCHER_START_METHOD) gets.
VARIANTS = [Variant("thread"), Variant("process"), Variant("process", "forkserver"),
            Variant("process", "spawn"), Variant("gevent"),
            pytest.param(Variant("process", flags=("--client", "curl")), marks=NEEDS_PYCURL),
            pytest.param(Variant("gevent", flags=("--client", "curl")), marks=NEEDS_PYCURL)]


@pytest.fixture(params=VARIANTS, ids=lambda variant: variant.id if isinstance(variant, Variant) else None)
def variant(request: pytest.FixtureRequest) -> Variant:
    return request.param


def _sha(name: str, size: int) -> str:
    return hashlib.sha256(body_for(name, size)).hexdigest()


def _normalised(records: list[dict]) -> dict[str, dict]:
    """Manifest records by URL, without what may differ between runs (timings, messages)."""
    by_url = {}
    for record in records:
        record = dict(record)
        record.pop("elapsed_s")
        if record["error"] is not None:
            assert record["error"]["message"], record
            record["error"] = record["error"]["kind"]
        by_url[record["url"]] = record
    assert len(by_url) == len(records), "a URL appears twice in the manifest"
    return by_url


def _files_under(root: str) -> dict[str, bytes]:
    """Every file under root but the journal's folder (.fetcher/)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".fetcher"]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


def _ok(url: str, name: str, size: int, attempts: int = 1, final_url: str | None = None) -> dict:
    return {"url": url, "status": "ok", "path": name_for_url(url), "bytes": size,
            "sha256": _sha(name, size), "http_status": 200, "content_type": "application/octet-stream",
            "final_url": final_url or url, "error": None, "attempts": attempts}


def _failed(url: str, kind: str, attempts: int, http_status: int | None = None, content_type: str | None = None,
            final_url: str | None = None) -> dict:
    """A failed record: with a response, its status, type and final URL are kept (issue 23, item 10)."""
    return {"url": url, "status": "failed", "path": None, "bytes": 0, "sha256": None,
            "http_status": http_status, "content_type": content_type,
            "final_url": final_url if final_url is not None or http_status is None else url, "error": kind,
            "attempts": attempts}


def test_mixed_input_gives_the_same_manifest_and_files(variant, server, tmp_path, out) -> None:
    url = server.url
    lines = [
        "# a comment, then a blank line", "",
        url("/files/small.jpg?size=10"),
        url("/files/empty.bin?size=0"),
        url("/files/big.bin?size=200000"),  # several chunks
        url("/files/small.jpg?size=10"),  # duplicate: fetched once
        url("/redirect/moved.jpg"),
        url("/flaky/flaky.bin?fail=1"),
        url("/status/404"),
        url("/status/500"),
        url("/reset/reset.bin"),
        url("/truncate/cut.bin?size=4000"),
        "not a url",
        "ftp://example.com/file.txt",
    ]
    result = run_cli(variant, [write_list(tmp_path, lines), "-o", out, "--retries", "1", "-q"])

    assert result.returncode == 1, result.stderr
    expected = {
        url("/files/small.jpg?size=10"): _ok(url("/files/small.jpg?size=10"), "small.jpg", 10),
        url("/files/empty.bin?size=0"): _ok(url("/files/empty.bin?size=0"), "empty.bin", 0),
        url("/files/big.bin?size=200000"): _ok(url("/files/big.bin?size=200000"), "big.bin", 200000),
        url("/redirect/moved.jpg"): _ok(url("/redirect/moved.jpg"), "moved.jpg", 1000,
                                        final_url=url("/files/moved.jpg")),
        url("/flaky/flaky.bin?fail=1"): _ok(url("/flaky/flaky.bin?fail=1"), "flaky.bin", 1000, attempts=2),
        url("/status/404"): _failed(url("/status/404"), "http-status", 1, 404, "text/plain"),
        url("/status/500"): _failed(url("/status/500"), "http-status", 2, 500, "text/plain"),
        url("/reset/reset.bin"): _failed(url("/reset/reset.bin"), "connect", 2),
        url("/truncate/cut.bin?size=4000"): _failed(url("/truncate/cut.bin?size=4000"), "truncated", 2, 200),
        "not a url": _failed("not a url", "invalid-url", 0),
        "ftp://example.com/file.txt": _failed("ftp://example.com/file.txt", "unsupported-scheme", 0),
    }
    assert _normalised(read_manifest(os.path.join(out, "manifest.jsonl"))) == expected
    on_disk = _files_under(out)
    assert on_disk.pop("manifest.jsonl")
    assert {path: hashlib.sha256(body).hexdigest() for path, body in on_disk.items()} == {
        record["path"]: record["sha256"] for record in expected.values() if record["status"] == "ok"}
    assert part_files(out) == []


def test_all_ok_exits_0_and_reuses_connections(variant, server, tmp_path, out) -> None:
    pool = 4
    urls = [server.url(f"/files/f{i}.png?size=300") for i in range(200)]
    result = run_cli(variant, [write_list(tmp_path, urls), "-o", out, "--pool", str(pool)])

    assert result.returncode == 0, result.stderr
    assert f"with the {variant.backend} backend (pool {pool}): 200 ok, 0 failed" in result.stdout
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert sorted(record["url"] for record in records) == sorted(urls)
    assert all(record["status"] == "ok" for record in records)
    assert server.stats.max_active <= pool
    assert server.stats.connections <= 2 * pool  # keep-alive: about one connection per worker
    assert "Connection pool is full" not in result.stderr  # urllib3: a session pool too small
    assert part_files(out) == []


def test_pool_is_the_number_of_concurrent_downloads(variant, server, tmp_path, out) -> None:
    urls = [server.url(f"/slow/s{i}?delay=0.5&size=10") for i in range(6)]
    result = run_cli(variant, [write_list(tmp_path, urls), "-o", out, "--pool", "3", "-q"])

    assert result.returncode == 0, result.stderr
    assert 2 <= server.stats.max_active <= 3


def test_missing_input_is_a_usage_error(variant, tmp_path, out) -> None:
    result = run_cli(variant, [str(tmp_path / "nope.txt"), "-o", out])

    assert result.returncode == 2
    assert "nope.txt" in result.stderr
    assert not os.path.exists(out)


def test_bad_option_is_a_usage_error(variant, tmp_path, out) -> None:
    result = run_cli(variant, [write_list(tmp_path, ["http://127.0.0.1:9/x"]), "-o", out, "--pool", "0"])

    assert result.returncode == 2
    assert "--pool" in result.stderr
    assert not os.path.exists(out)


def test_only_bad_lines_fail_without_a_request(variant, server, tmp_path, out) -> None:
    lines = ["not a url", "mailto:someone@example.com", "http://", "http://exa mple.com/x"]
    result = run_cli(variant, [write_list(tmp_path, lines), "-o", out, "-q"])

    assert result.returncode == 1, result.stderr
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert [record["error"]["kind"] for record in records] == [
        "invalid-url", "unsupported-scheme", "invalid-url", "invalid-url"]
    assert server.stats.connections == 0


def test_empty_list_exits_0_with_an_empty_manifest(variant, tmp_path, out) -> None:
    result = run_cli(variant, [write_list(tmp_path, b"# nothing here\n\n"), "-o", out, "-q"])

    assert result.returncode == 0, result.stderr
    assert read_manifest(os.path.join(out, "manifest.jsonl")) == []


@pytest.mark.skipif(not HAVE_PROC, reason="reads the process tree from /proc")
def test_ctrl_c_stops_promptly_and_leaves_nothing_behind(variant, server, tmp_path, out) -> None:
    fast = [server.url(f"/files/fast{i}.jpg?size=100") for i in range(5)]
    # Each drip would take 50 s; the run must stop long before RUN_TIMEOUT_S.
    drips = [server.url(f"/drip/drip{i}?size=200&interval=0.25") for i in range(3)]
    process = subprocess.Popen(cli_command(variant, [write_list(tmp_path, fast + drips), "-o", out,
                                                     "--pool", "3", "-q"]),
                               env=variant.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        # All three workers on a drip means every fast file has been fetched.
        wait_until(lambda: server.stats.active == 3 and sum(
            server.stats.requests[f"/drip/drip{i}"] for i in range(3)) == 3, what="drips in flight",
            state=lambda: (server.stats.active, server.stats.snapshot(), process.poll()))
        wait_until(lambda: sum("drip" in part for part in part_files(out)) == 3, what="three drip .part files")
        children = descendants(process.pid)
        interrupt_group(process)
        _stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S / 4)
    finally:
        kill_group(process)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert {record["url"] for record in records} == set(fast)
    assert all(record["status"] == "ok" for record in records)
    assert part_files(out) == []
    wait_until(lambda: not still_running(children), timeout=10, what=f"children {children} to exit")
