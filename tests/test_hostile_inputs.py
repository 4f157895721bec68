"""Bad input files at scale: every bad row is one readable failure (or one line for the file), the good
rows are fetched, nothing raises a traceback, and memory stays bounded.

Each run is the CLI in a fresh process (``python -m fetcher``), so the peak memory measured
(``ru_maxrss`` of the child) is the run's own.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import resource
import subprocess
import sys

import pytest
from test_cli import manifest

from fetcher.models import FetchTask, Result
from fetcher.sources.readers import read_rows
from fetcher.sources.tasks import iter_rows

MAX_RSS_MB = 300


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process; its peak RSS checked against MAX_RSS_MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, "-m", "fetcher", *args, "--client", "requests", "--backend", "thread"],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb > before:  # ru_maxrss of children is the largest one so far: only a new peak is this run's
        assert peak_kb < MAX_RSS_MB * 1024, f"peak RSS {peak_kb // 1024} MB"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def rows_of(path: str) -> list[FetchTask | Result]:
    return list(iter_rows(read_rows(path)))


def test_a_jsonl_line_of_100000_nested_brackets_fails_alone(server, tmp_path):
    """28b5069: RecursionError through iter_rows, an empty manifest, the good rows never fetched."""
    good = [server.url(f"/files/n{i}.bin?size=100") for i in range(2)]
    lines = [json.dumps({"url": good[0]}), "[" * 100_000, json.dumps({"url": "http://h/x", "deep": [[[[[[1]]]]]]}),
             '{"url": "http://h/y", "deep": ' + "[" * 900 + "]" * 900 + "}", json.dumps({"url": good[1]})]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "out")
    done = run([str(path), "-o", out])
    assert done.returncode == 1  # some rows failed
    records = manifest(out)
    assert {url for url, r in records.items() if r["status"] == "ok"} == set(good)
    failed = [r for r in records.values() if r["status"] == "failed"]
    assert len(failed) == 3  # the brackets, the 900-deep row, and http://h/x (no such host)
    assert sum("nested deeper than" in r["error"]["message"] for r in failed) == 2


def random_lines(count: int) -> list[bytes]:
    rng = random.Random(24)
    lines = [bytes(b for b in rng.randbytes(rng.randrange(1, 200)) if b not in b"\r\n") for _ in range(count)]
    return [line for line in lines if line.strip() and not line.strip().startswith(b"#")]


@pytest.mark.parametrize("suffix", ["txt", "csv", "jsonl"])
def test_a_file_of_1000_lines_of_random_bytes_is_one_line_and_exit_2(tmp_path, suffix):
    path = tmp_path / f"in.{suffix}"
    path.write_bytes(b"\n".join(random_lines(1000)) + b"\n")
    done = run([str(path), "-o", str(tmp_path / "out")])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("suffix", ["txt", "csv", "jsonl"])
def test_1000_lines_of_random_bytes_after_good_ones_are_readable_failures(tmp_path, suffix):
    """Past the sample that tells a binary file, each random line is a failed row, the rest go on."""
    lines = random_lines(1000)
    good = [f"http://h/{i}".encode() for i in range(2000)]
    if suffix == "jsonl":
        good = [json.dumps({"url": url.decode()}).encode() for url in good]
    path = tmp_path / f"in.{suffix}"
    path.write_bytes((b"url\n" if suffix == "csv" else b"") + b"\n".join(good + lines + good[:1]) + b"\n")
    got = rows_of(str(path))
    failures = [r for r in got if isinstance(r, Result)]
    tasks = [r for r in got if isinstance(r, FetchTask)]
    assert len(tasks) >= len(good)  # the good lines, and the last one after the garbage (csv: a quote may join lines)
    assert len(failures) + len(tasks) - len(good) >= len(lines) * 0.9 or suffix == "csv"
    assert failures and len(failures) <= len(lines)
    for failure in failures:
        assert failure.error is not None and failure.error.message.startswith("line ")
        json.dumps(failure.to_record(), ensure_ascii=False).encode("utf-8")  # writable to the manifest


def test_a_5_mb_csv_field_is_one_failed_row_and_memory_stays_bounded(server, tmp_path):
    good = server.url("/files/big-field-neighbour.bin?size=100")
    path = tmp_path / "in.csv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("url,note\n")
        handle.write(f'"http://h/{"a" * (5 << 20)}",x\n')
        handle.write(f"{good},y\n")
        handle.write(f'http://h/b,"{"n" * (5 << 20)}"\n')
    out = str(tmp_path / "out")
    done = run([str(path), "-o", out])
    records = manifest(out)
    assert records[good]["status"] == "ok"
    assert len(records) == 3 and done.returncode == 1
    for url, record in records.items():
        assert len(url) < 10_000  # a 5 MB line is cut in what is shown


@pytest.mark.parametrize("value", [42, 4.5, ["http://h/a"], {"u": 1}, None, True])
def test_a_url_that_is_not_text_is_one_readable_failure(tmp_path, value):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"url": "http://h/first"}) + "\n" + json.dumps({"url": value}) + "\n")
    got = rows_of(str(path))
    assert isinstance(got[0], FetchTask) and isinstance(got[1], Result)
    assert got[1].error is not None and got[1].error.message.startswith("line 2")


def test_a_truncated_gz_input_ends_with_one_line(server, tmp_path):
    urls = [server.url(f"/files/gz{i}.bin?size=50") for i in range(3000)]
    data = gzip.compress("\n".join(urls).encode())
    path = tmp_path / "in.txt.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    got = rows_of(str(path))
    failures = [r for r in got if isinstance(r, Result)]
    assert len(failures) == 1 and "cannot read the rest of the input" in failures[0].error.message
    tasks = [r for r in got if isinstance(r, FetchTask)]
    assert 0 < len(tasks) < len(urls) and all(t.url in urls for t in tasks[:-1])


def test_a_gz_truncated_in_its_header_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "in.txt.gz"
    path.write_bytes(gzip.compress(b"http://h/a\n")[:12])
    done = run([str(path), "-o", str(tmp_path / "out")])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not os.path.exists(tmp_path / "out" / "manifest.jsonl") or not manifest(str(tmp_path / "out"))
