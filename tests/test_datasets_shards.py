"""Webdataset shards: written by the coordinator, complete after a kill -9 and a rerun, each sample once.

Shards are read back with the standard library's tarfile, as a training job would.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest
from conftest import write_list
from shard_reader import read_folder, tar_members
from test_cli import manifest

from fetcher.cli import main

Image = pytest.importorskip("PIL.Image")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")


def read_shards(out: str) -> dict[str, dict[str, bytes]]:
    """Every finished shard's members: shard name -> {member name: bytes}; no .part may remain."""
    assert not [n for n in os.listdir(out) if n.endswith(".part")]
    return {name: tar_members(os.path.join(out, name)) for name in sorted(os.listdir(out)) if name.endswith(".tar")}


def samples_of(out: str, shard_size: int = 10_000, caption: bool = False) -> list[str]:
    """The URL of every successful row in every shard, in order, checking each shard is whole."""
    return [row["url"] for row in read_folder(out, shard_size, caption) if row["status"] == "success"]


def member_of(shards: dict[str, dict[str, bytes]], rows: dict[str, dict], url: str, ext: str) -> bytes:
    key = rows[url]["key"]
    return shards[key[:5] + ".tar"][f"{key}.{ext}"]


def wait_for_lock(out: str, timeout: float = 30.0) -> None:
    """Until no process holds the output folder's lock (a killed run's orphaned workers inherit it)."""
    deadline = time.monotonic() + timeout
    with open(os.path.join(out, ".fetcher", "lock"), "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the killed run's workers never exited"
                time.sleep(0.05)


def image_urls(server, count: int, prefix: str = "w") -> list[str]:
    return [server.url(f"/img/{prefix}{i}.png?format=png&w={40 + i % 7}&h=30") for i in range(count)]


def test_shards_hold_each_sample_with_its_record_caption_and_stats(server, out, tmp_path):
    urls = image_urls(server, 23)
    rows = [{"url": u, "caption": f"caption {i}"} for i, u in enumerate(urls)]
    path = str(tmp_path / "in.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    args = [path, "-o", out, "-q", "--output-format", "webdataset", "--shard-size", "10",
            "--caption-column", "caption", "--resize", "32", "--resize-mode", "center_crop",
            "--manifest-format", "parquet"]
    assert main(args) == 0
    shards = read_shards(out)
    assert list(shards) == ["00000.tar", "00001.tar", "00002.tar"]
    assert [len(m) for m in shards.values()] == [30, 30, 9]  # KEY.jpg, KEY.json, KEY.txt
    assert sorted(samples_of(out, 10, caption=True)) == sorted(urls)
    rows = {row["url"]: row for row in read_folder(out, 10, caption=True)}
    for i, url in enumerate(urls):
        assert member_of(shards, rows, url, "txt") == f"caption {i}".encode()
        assert Image.open(io.BytesIO(member_of(shards, rows, url, "jpg"))).size == (32, 32)
    with open(os.path.join(out, "00002_stats.json"), encoding="utf-8") as handle:
        stats = json.load(handle)
    assert stats["count"] == stats["successes"] == 3 and stats["status_dict"] == {"success": 3}
    records = manifest(out)
    assert records[urls[0]]["path"] == f"{records[urls[0]]['shard']}/{rows[urls[0]]['key']}.jpg"
    assert not os.path.exists(os.path.join(out, "staging"))
    table = pq.read_table(os.path.join(out, "manifest.parquet"))
    assert table.num_rows == 23 and set(table.column("status").to_pylist()) == {"ok"}
    # A rerun fetches nothing and changes no shard.
    before = {n: os.path.getmtime(os.path.join(out, n)) for n in shards}
    requests_before = sum(server.stats.requests.values())
    assert main(args) == 0
    assert sum(server.stats.requests.values()) == requests_before
    assert {n: os.path.getmtime(os.path.join(out, n)) for n in shards} == before
    assert {r["status"] for r in manifest(out).values()} == {"skipped"}
    assert manifest(out)[urls[5]]["width"] == records[urls[5]]["width"]


def test_failed_samples_are_in_no_shard(server, out, tmp_path):
    urls = image_urls(server, 5) + [server.url("/img/bad.png?format=png&fault=corrupt"),
                                    server.url("/status/404")]
    assert main([write_list(tmp_path, urls), "-o", out, "-q", "--output-format", "webdataset",
                 "--verify-image", "--backend", "process", "--processes", "2"]) == 1
    assert sorted(samples_of(out)) == sorted(urls[:5])


@pytest.mark.parametrize(("backend", "sig"), [("thread", signal.SIGKILL), ("process", signal.SIGKILL),
                                              ("process", signal.SIGINT)])
def test_kill_9_mid_run_then_rerun_gives_complete_shards_with_each_sample_once(server, out, tmp_path, backend, sig):
    urls = image_urls(server, 60, prefix="k")
    path = write_list(tmp_path, urls)
    args = [path, "-o", out, "-q", "--output-format", "webdataset", "--shard-size", "7", "--verify-image",
            "--backend", backend]
    # One request at a time, 20 a second: slow enough to kill while shards are being written.
    slow = ["--pool", "2", "--per-host", "1", "--delay", "0.05"]
    child = subprocess.Popen([sys.executable, "-m", "fetcher", *args, *slow], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # Killed while shard 3 is open: 00003.tar.part holds samples that must not be lost or doubled.
        while not os.path.exists(os.path.join(out, "00003.tar.part")) and time.monotonic() < deadline:
            assert child.poll() is None, child.stderr.read()
            time.sleep(0.02)
        os.kill(child.pid, sig)
        if sig == signal.SIGINT:  # Ctrl-C: the open shard is finished unless a sample was being written
            assert child.wait(30) == 130
    finally:
        child.kill()
        child.wait(10)
        child.stderr.close()
    finished = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out) if n.endswith(".tar")}
    assert len(finished) >= 3 and len(finished) * 7 < 60, "killed in the middle"
    if sig == signal.SIGKILL:
        assert any(n.endswith(".tar.part") for n in os.listdir(out))
    wait_for_lock(out)  # process-backend workers notice the dead parent within a second, then exit
    assert main(args) == 0
    shards = read_shards(out)
    assert {n: os.path.getmtime(os.path.join(out, n)) for n in finished} == finished  # kept as they were
    urls_in_shards = samples_of(out, 7)
    assert sorted(urls_in_shards) == sorted(urls)  # every sample, exactly once
    sizes = [len(m) // 2 for m in shards.values()]
    # After a kill -9 every shard but the last is full; Ctrl-C finishes the open shard as it is.
    short = [size for size in sizes[:-1] if size != 7]
    assert all(0 < size <= 7 for size in sizes) and len(short) <= (0 if sig == signal.SIGKILL else 1)
    assert list(shards) == [f"{i:05d}.tar" for i in range(len(shards))]
    assert set(manifest(out)) == set(urls)


def test_webdataset_options_are_checked(tmp_path, out, capsys):
    path = write_list(tmp_path, ["http://127.0.0.1:9/x.jpg"])
    for flags, message in ((["--output-format", "zip"], "output-format"), (["--manifest-format", "csv"], "manifest"),
                           (["--output-format", "webdataset", "--naming", "hash"], "naming"),
                           (["--caption-column", "TEXT"], "caption-column")):
        assert main([path, "-o", out, "-q", *flags]) == 2
        assert message in capsys.readouterr().err


def test_a_shard_the_index_never_recorded_is_read_back(server, out, tmp_path):
    """Killed between a shard's rename and its commit: the shard on disk is the truth."""
    urls = image_urls(server, 9, prefix="r")
    args = [write_list(tmp_path, urls), "-o", out, "-q", "--output-format", "webdataset", "--shard-size", "4"]
    assert main(args) == 0
    os.remove(os.path.join(out, ".fetcher", "shards.sqlite3"))
    requests_before = sum(server.stats.requests.values())
    assert main(args) == 0
    assert sum(server.stats.requests.values()) == requests_before
    assert sorted(samples_of(out, 4)) == sorted(urls)
    assert {r["status"] for r in manifest(out).values()} == {"skipped"}


def test_the_readme_dataset_example_runs_as_written(server, tmp_path, monkeypatch):
    """The commands of README.md's "Building an image dataset", on local URLs instead of sample_urls.txt's."""
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    with open(readme, encoding="utf-8") as handle:
        block = handle.read().split("<!-- dataset-example -->\n```\n", 1)[1].split("```", 1)[0]
    assert block.count("\nfetcher ") == 1
    monkeypatch.chdir(tmp_path)
    urls = [server.url(f"/img/readme{i}.jpg?w={100 + i}&h=80") for i in range(5)] + [server.url("/img/t.jpg?w=8&h=8")]
    (tmp_path / "sample_urls.txt").write_text("# local\n" + "\n".join(urls) + "\n")
    # As a user's shell runs it, with this interpreter as python3 and fetcher.
    script = 'python3() { "$PY" "$@"; }\nfetcher() { "$PY" -m fetcher "$@"; echo "exit $?"; }\n' + block
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PY": sys.executable}, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "exit 1" in done.stdout  # the 8 x 8 image is under --min-image-size 32
    assert done.stdout.count(".webp") == 1 and ".json" in done.stdout  # the first three members
    shards = read_shards(str(tmp_path / "dataset"))
    assert sorted(samples_of(str(tmp_path / "dataset"), 1000, caption=True)) == sorted(urls[:5])
    assert all(Image.open(io.BytesIO(data)).size == (256, 256) for name, data in shards["00000.tar"].items()
               if name.endswith(".webp"))
    assert pq.read_table(str(tmp_path / "dataset" / "manifest.parquet")).num_rows == 6


@pytest.mark.parametrize("in_memory_max", [None, 0])
def test_a_resized_sample_reaches_its_shard_in_the_result_never_through_a_staged_file(server, out, monkeypatch,
                                                                                    in_memory_max):
    """A re-encoded sample goes from the worker to the shard in the Result: no staged file is written,
    synced, renamed, read back and removed (issue 26: each image reaches the disk once, in its shard).
    Its download is in memory too when its declared length is under the cap (None), else in a .part
    (0), which is gone once the image is re-encoded. Both end the same in the shard."""
    import dataclasses
    import hashlib

    from fetcher.download import images
    from fetcher.download.attempt import fetch_one
    from fetcher.models import FetchTask, Status
    from fetcher.options import Options
    from fetcher.run.shards import ShardWriter
    from fetcher.transports.factory import make_session

    if in_memory_max is not None:
        monkeypatch.setattr(images, "SAMPLE_IN_MEMORY_MAX", in_memory_max)
    options = Options.create(out=out, output_format="webdataset", shard_size=2, resize=16, resize_mode="border")
    options = dataclasses.replace(options, shards_here=True)  # as run/runner.py's plan sets it
    writer = ShardWriter(options)
    urls = [server.url(f"/img/m{i}.png?format=png&w=40&h=30") for i in range(2)]
    tasks = list(writer.admit(iter([FetchTask(url=u, name="x", index=i) for i, u in enumerate(urls)])))
    session = make_session(options, 1)
    finals = []
    for task in tasks:
        result = fetch_one(task, session, options)
        assert result.status is Status.OK and result.extra["width"] == 40
        assert result.content is not None and result.path is None and result.staged == 0
        assert [n for d, _, names in os.walk(out) for n in names if d != os.path.join(out, ".fetcher")
                and not n.startswith("00000.")] == []  # only the open shard and the run's index
        finals.append(writer.add(result))
    writer.close(completed=True)
    assert all(final.content is None for final in finals)  # the manifest and journal never hold the bytes
    members = tar_members(os.path.join(out, "00000.tar"))
    for final in finals:
        data = members[final.path.split("/", 1)[1]]
        assert final.path.endswith(".jpg") and Image.open(io.BytesIO(data)).size == (16, 16)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (final.bytes, final.sha256)


def test_a_worker_of_serve_stages_its_resized_samples_for_the_shards_it_writes(server, out):
    """Without ``shards_here`` (``fetcher work``: serve orders the shard rows, run/shard_build.py reads
    the staged images), a re-encoded sample is staged under its final name, not sent in the Result."""
    from fetcher.download.attempt import fetch_one
    from fetcher.models import FetchTask, Status
    from fetcher.options import Options
    from fetcher.run.shards import ShardWriter
    from fetcher.transports.factory import make_session

    options = Options.create(out=out, output_format="webdataset", resize=16, durability="none")
    [task] = ShardWriter(options).admit(iter([FetchTask(url=server.url("/img/s.png?format=png&w=40&h=30"),
                                                        name="x")]))
    result = fetch_one(task, make_session(options, 1), options)
    assert result.status is Status.OK and result.content is None
    assert result.path.startswith("staging/") and result.path.endswith(".jpg")
    with open(os.path.join(out, result.path), "rb") as handle:
        assert Image.open(handle).size == (21, 16)  # keep_ratio: the smaller side is 16
