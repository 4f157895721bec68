"""benchmarks/wan.py keeps what each run leaves, so a lost URL can be traced (issue 27)."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import wan  # noqa: E402


def test_a_run_keeps_its_streams_manifest_and_the_urls_it_lost(tmp_path) -> None:
    out, tmp, keep = tmp_path / "out", tmp_path / "tmp", tmp_path / "keep"
    (out / "h1.test").mkdir(parents=True)
    tmp.mkdir()
    (out / "h1.test" / "f00001-abc.bin").write_bytes(b"x" * 10)
    (out / "h1.test" / "f00002-abc.bin").write_bytes(b"x" * 3)  # cut short: not saved
    urls = ["https://h1.test/f00001.bin", "https://h1.test/f00002.bin", "https://h2.test/f00003.bin"]
    records = [{"url": urls[1], "status": "failed", "error": {"kind": "truncated", "message": "body ended early"}}]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp / "stderr").write_text("fetcher: 1 failed\n")

    saved = wan.saved_keys(str(out), {"f00001": 10, "f00002": 10, "f00003": 10})
    lost = wan.keep_run(str(keep / wan.slug("80 ms") / wan.slug("fetcher (default)")), str(out), str(tmp), urls, saved)

    assert saved == {"f00001"} and lost == 2
    folder = keep / "80-ms" / "fetcher-default"
    assert (folder / "stderr").read_text() == "fetcher: 1 failed\n" and (folder / "manifest.jsonl").exists()
    assert (folder / "lost.txt").read_text().splitlines() == [
        f"{urls[1]}\tfailed truncated: body ended early", f"{urls[2]}\tno record"]


def test_dns_queries_are_shown_per_host() -> None:
    assert wan.per_host(1068, 500) == "1068 (2.14/host)"
