"""img2dataset's webdataset layout: files, keys and fields of each shard, read back as its users do.

The shards are read with the ``webdataset`` package (what training jobs use), with tarfile, and
their parquet with pyarrow; ``shard_reader.check_shard`` checks the three files of a shard agree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import write_list
from shard_reader import expected_key, read_folder, tar_members

from fetcher.cli import main
from fetcher.run.shard_rows import sample_key

Image = pytest.importorskip("PIL.Image")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
wds = pytest.importorskip("webdataset")


def webdataset_samples(tars: list[str]) -> list[dict]:
    """The samples of ``tars`` as webdataset's pipeline groups them (its own reader leaves the files to GC)."""
    samples = []
    for path in tars:
        with open(path, "rb") as stream:
            files = wds.tariterators.tar_file_expander([{"url": path, "stream": stream}])
            samples += list(wds.tariterators.group_by_keys(files))
    return samples


@pytest.mark.parametrize(("shard", "index", "size", "key"), [
    (0, 0, 10_000, "000000000"), (3, 42, 10_000, "000030042"), (12, 9, 10, "000129"), (7, 0, 1, "00007"),
    (1, 99, 100, "0000199"), (1, 100, 101, "00001100"), (123456, 5, 10, "1234565")])
def test_keys_are_img2datasets(shard, index, size, key):
    assert sample_key(shard, index, size) == key == expected_key(shard, index, size)


def dataset_input(server, tmp_path) -> tuple[str, list[dict]]:
    """23 rows: 18 images of known sizes, a 404, a timeout-free refused host, a corrupt and two tiny images."""
    rows = [{"url": server.url(f"/img/l{i}.png?format=png&w={40 + i}&h={30 + i % 3}"), "caption": f"cap {i}",
             "lang": "en" if i % 2 else "fr", "score": i / 10} for i in range(18)]
    rows.insert(3, {"url": server.url("/status/404"), "caption": "missing", "lang": "de", "score": 0.5})
    rows.insert(7, {"url": server.url("/img/bad.png?format=png&fault=corrupt"), "caption": None, "lang": "de",
                    "score": 0.7})
    rows.insert(9, {"url": server.url("/img/tiny.png?format=png&w=8&h=8"), "caption": "tiny", "lang": "it",
                    "score": 0.9})
    rows.insert(15, {"url": server.url("/img/tiny2.png?format=png&w=9&h=8"), "caption": "tiny2", "lang": "it",
                     "score": 1.0})
    rows.append({"url": "ftp://example.invalid/x.png", "caption": "ftp", "lang": "xx", "score": 2.0})
    path = str(tmp_path / "in.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, rows


def test_each_shard_has_img2datasets_tar_parquet_and_stats_field_by_field(server, out, tmp_path):
    path, rows = dataset_input(server, tmp_path)
    assert len(rows) == 23
    args = [path, "-o", out, "-q", "--output-format", "webdataset", "--shard-size", "10", "--caption-column",
            "caption", "--resize", "32", "--resize-mode", "keep_ratio", "--min-image-size", "10", "--retries", "0"]
    assert main(args) == 1  # some rows failed
    assert sorted(n for n in os.listdir(out) if n[0].isdigit()) == [
        "00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar", "00001_stats.json",
        "00002.parquet", "00002.tar", "00002_stats.json"]
    found = read_folder(out, 10, caption=True)
    assert [len(found[:10]), len(found[10:20]), len(found[20:])] == [10, 10, 3]  # rows, failures included
    by_url = {r["url"]: r for r in found}
    assert sorted(by_url) == sorted(r["url"] for r in rows)  # one row per input row
    for given in rows:
        row = by_url[given["url"]]
        assert (row["caption"], row["lang"], row["score"]) == (given["caption"], given["lang"], given["score"])
        assert list(row)[:4] == ["url", "caption", "lang", "score"]  # the input's columns, then img2dataset's
    statuses = Counter(r["status"] for r in found)
    assert statuses == {"success": 18, "failed_to_download": 2, "failed_to_resize": 3}
    assert by_url[server.url("/status/404")]["error_message"].startswith("http-status: HTTP 404")
    assert by_url["ftp://example.invalid/x.png"]["status"] == "failed_to_download"
    assert by_url[server.url("/img/tiny.png?format=png&w=8&h=8")]["error_message"].startswith("image-too-small: ")
    assert by_url[server.url("/img/bad.png?format=png&fault=corrupt")]["status"] == "failed_to_resize"
    for i in range(18):  # keep_ratio: the smaller side becomes 32
        row = by_url[server.url(f"/img/l{i}.png?format=png&w={40 + i}&h={30 + i % 3}")]
        assert (row["original_width"], row["original_height"]) == (40 + i, 30 + i % 3)
        assert row["height"] == 32 and row["width"] == round((40 + i) * 32 / (30 + i % 3))
    # The parquet's types are img2dataset's.
    schema = pq.read_schema(os.path.join(out, "00000.parquet"))
    assert {name: str(schema.field(name).type) for name in ("key", "status", "error_message", "width", "sha256")} \
        == {"key": "string", "status": "string", "error_message": "string", "width": "int32", "sha256": "string"}
    # Read as a training job reads them: every success once, with its image, caption and record.
    tars = [os.path.join(out, f"{i:05d}.tar") for i in range(3)]
    samples = webdataset_samples(tars)
    assert sorted(s["__key__"] for s in samples) == sorted(r["key"] for r in found if r["status"] == "success")
    for sample in samples:
        record = json.loads(sample["json"])
        assert record == by_url[record["url"]] and sample["txt"].decode() == record["caption"]
        assert hashlib.sha256(sample["jpg"]).hexdigest() == record["sha256"]
        assert Image.open(io.BytesIO(sample["jpg"])).size == (record["width"], record["height"])
    # fetcher's own manifest is as it was: one record per URL, fetcher's statuses, the sample's path in its shard.
    with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as handle:
        records = {r["url"]: r for r in map(json.loads, handle)}
    first = by_url[rows[0]["url"]]
    assert records[rows[0]["url"]]["status"] == "ok"
    assert records[rows[0]["url"]]["path"] == f"{first['key'][:5]}.tar/{first['key']}.jpg"


def test_without_reencoding_a_sample_keeps_its_original_bytes_and_extension(server, out, tmp_path):
    urls = [server.url(f"/img/o{i}.{fmt}?format={fmt}&w=20&h=10") for i, fmt in enumerate(["png", "webp", "jpg"])]
    assert main([write_list(tmp_path, urls), "-o", out, "-q", "--output-format", "webdataset"]) == 0
    [row0, row1, row2] = read_folder(out, 10_000)
    assert [r["key"] for r in (row0, row1, row2)] == ["000000000", "000000001", "000000002"]
    members = tar_members(os.path.join(out, "00000.tar"))
    extensions = sorted(name.rsplit(".", 1)[1] for name in members if not name.endswith(".json"))
    assert extensions == ["jpg", "png", "webp"]
    for row in (row0, row1, row2):
        assert (row["width"], row["height"], row["original_width"], row["original_height"]) == (20, 10, 20, 10)
        assert "caption" not in row


def test_encode_format_names_the_member(server, out, tmp_path):
    urls = [server.url(f"/img/e{i}.jpg?w=30&h=20") for i in range(3)]
    assert main([write_list(tmp_path, urls), "-o", out, "-q", "--output-format", "webdataset", "--resize", "16",
                 "--resize-mode", "border", "--encode-format", "webp"]) == 0
    rows = read_folder(out, 10_000)
    members = tar_members(os.path.join(out, "00000.tar"))
    assert sorted(n for n in members if n.endswith(".webp")) == sorted(r["key"] + ".webp" for r in rows)
    assert {(r["width"], r["height"]) for r in rows} == {(16, 16)}


def test_a_rerun_retries_only_the_failed_rows_into_new_shards(server, out, tmp_path):
    """img2dataset's #395: finished shards stay as they are; new successes go into new shards."""
    good = [server.url(f"/img/g{i}.png?format=png&w=20&h=20") for i in range(5)]
    flaky = [server.url(f"/flaky/f{i}.png?fail=1&format=png") for i in range(3)]
    gone = server.url("/status/404")
    urls = good[:2] + flaky[:1] + good[2:4] + flaky[1:] + [gone] + good[4:]
    args = [write_list(tmp_path, urls), "-o", out, "-q", "--output-format", "webdataset", "--shard-size", "4",
            "--retries", "0"]
    assert main(args) == 1
    first = read_folder(out, 4)
    assert Counter(r["status"] for r in first) == {"success": 5, "failed_to_download": 4}
    before = {n: (os.path.getmtime(os.path.join(out, n)), os.path.getsize(os.path.join(out, n)))
              for n in os.listdir(out) if n[0].isdigit()}
    assert len(before) == 9  # three shards of 4, 4 and 1 rows
    good_requests = sum(server.stats.requests[f"/img/g{i}.png"] for i in range(5))

    assert main(args) == 1  # the 404 is still failing
    assert {n: (os.path.getmtime(os.path.join(out, n)), os.path.getsize(os.path.join(out, n)))
            for n in before} == before  # finished shards untouched
    assert sum(server.stats.requests[f"/img/g{i}.png"] for i in range(5)) == good_requests  # not fetched again
    assert server.stats.requests["/status/404"] == 2
    rows = read_folder(out, 4)
    new = rows[len(first):]
    assert sorted(r["url"] for r in new) == sorted(flaky) and {r["status"] for r in new} == {"success"}
    assert [r["key"] for r in new] == ["000030", "000031", "000032"]  # shard 3, after the finished ones
    successes = [r["url"] for r in rows if r["status"] == "success"]
    assert sorted(successes) == sorted(good + flaky)  # each sample exactly once across all shards

    assert main(args) == 1  # a third run: nothing new, no new shard
    assert len(read_folder(out, 4)) == len(rows)


def doc_block(marker: str, page: str = "docs/img2dataset.md") -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, page), encoding="utf-8") as handle:
        return handle.read().split(f"<!-- {marker} -->\n```\n", 1)[1].split("```", 1)[0]


def test_the_translated_img2dataset_example_runs_as_written_and_reruns_only_the_failed_rows(server, tmp_path):
    """docs/img2dataset.md's MSCOCO translation, on local URLs; then its rerun example."""
    block = doc_block("img2dataset-example")
    rerun = doc_block("img2dataset-rerun")
    urls = [server.url(f"/img/coco{i}.jpg?w={60 + i}&h=40") for i in range(6)]
    urls += [server.url(f"/flaky/back{i}.jpg?fail=1&code=404&format=jpg") for i in range(2)]
    pq.write_table(pa.table({"URL": urls, "TEXT": [f"a photo {i}" for i in range(len(urls))]}),
                   str(tmp_path / "mscoco.parquet"))
    script = 'fetcher() { "$PY" -m fetcher "$@" -q; echo "exit $?"; }\n'
    for code, expected in ((block, "exit 1"), (rerun, "exit 0")):
        done = subprocess.run(["bash", "-c", script + code], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env={**os.environ, "PY": sys.executable}, stdin=subprocess.DEVNULL)
        assert done.returncode == 0 and done.stdout.strip() == expected, done.stdout + done.stderr
        rows = read_folder(str(tmp_path / "mscoco"), 10_000, caption=True)
        if expected == "exit 1":
            first = rows
            assert Counter(r["status"] for r in rows) == {"success": 6, "failed_to_download": 2}
    assert rows[:len(first)] == first and [r["key"] for r in rows[len(first):]] == ["000010000", "000010001"]
    assert sorted(r["url"] for r in rows if r["status"] == "success") == sorted(urls)
    assert {(r["width"], r["height"]) for r in rows if r["status"] == "success"} == {(256, 256)}
    assert {r["caption"] for r in rows} == {f"a photo {i}" for i in range(len(urls))}


def test_status_shows_the_shards_finished_and_in_progress(server, out, tmp_path, capsys):
    urls = [server.url(f"/img/st{i}.png?format=png&w=20&h=20") for i in range(5)] + [server.url("/status/404")]
    assert main([write_list(tmp_path, urls), "-o", out, "-q", "--output-format", "webdataset", "--shard-size", "4",
                 "--retries", "0"]) == 1
    with open(os.path.join(out, "00002.tar.part"), "wb") as handle:  # what a running build has open
        handle.write(b"\0" * 1024)
    capsys.readouterr()
    assert main(["status", "-o", out]) == 0
    assert ("webdataset: 2 shards finished (6 rows: 5 success, 1 failed_to_download, 0 failed_to_resize); "
            "in progress: 00002.tar.part (1,024 bytes)") in capsys.readouterr().out
