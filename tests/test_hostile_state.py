"""Corrupted state in an output folder: a journal with a garbage header or cut short, garbage ``.part``
sidecars, an unfinished shard, a damaged shard index or shard. Each ends with a clear one-line error
(exit 2) or a recovery; a finished file is never deleted or changed; never a traceback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

JOURNAL = os.path.join(".fetcher", "journal.sqlite3")
INDEX = os.path.join(".fetcher", "shards.sqlite3")


def run(url_list: str, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "fetcher", url_list, "-o", out, "-q", "--client", "requests",
                           "--backend", "thread", *extra], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def finished_files(out: str) -> dict[str, str]:
    """Every finished file (not the manifest, not fetcher's own folder) with its SHA-256."""
    found = {}
    for folder, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if d != ".fetcher"]
        for name in files:
            if not name.startswith("manifest") and not name.endswith((".part", ".meta")):
                path = os.path.join(folder, name)
                with open(path, "rb") as handle:
                    found[os.path.relpath(path, out)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), done.stderr


@pytest.fixture
def fetched(server, tmp_path):
    """A finished run of 6 files: (url list, out, the files and their hashes)."""
    urls = [server.url(f"/files/st{i}.bin?size={1000 + i}") for i in range(6)]
    url_list = tmp_path / "urls.txt"
    url_list.write_text("\n".join(urls) + "\n")
    out = str(tmp_path / "out")
    assert run(str(url_list), out).returncode == 0
    return str(url_list), out, finished_files(out)


def _garbage_header(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.write(os.urandom(100))


def _cut_short(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2 + 7)


def _all_garbage(path: str) -> None:
    with open(path, "wb") as handle:
        handle.write(os.urandom(5000))


@pytest.mark.parametrize("damage", [_garbage_header, _cut_short, _all_garbage])
def test_a_damaged_journal_is_one_line_and_touches_no_file(fetched, damage):
    url_list, out, files = fetched
    damage(os.path.join(out, JOURNAL))
    done = run(url_list, out)
    one_line_error(done, "journal", "damaged", "mv ")
    assert finished_files(out) == files
    status = subprocess.run([sys.executable, "-m", "fetcher", "status", out], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert status.returncode == 2 and "Traceback" not in status.stderr
    os.replace(os.path.join(out, JOURNAL), os.path.join(out, JOURNAL + ".bad"))  # what the line says to do
    again = run(url_list, out)
    assert again.returncode == 0 and finished_files(out) == files  # the files there are kept, not fetched again


def test_garbage_part_sidecars_are_recovered_from(fetched, server, tmp_path):
    url_list, out, files = fetched
    host = next(name for name in os.listdir(out) if name.startswith("127.0.0.1"))
    new = [server.url(f"/files/new{i}.bin?size=2000") for i in range(3)]
    for i, data in enumerate([os.urandom(300), b"\xff\xfe garbage", b"{\"url\": 5}"]):
        with open(os.path.join(out, host, f"new{i}.bin.part"), "wb") as handle:
            handle.write(os.urandom(100 * (i + 1)))
        with open(os.path.join(out, host, f"new{i}.bin.part.meta"), "wb") as handle:
            handle.write(data)
    with open(url_list, "a", encoding="utf-8") as handle:
        handle.write("\n".join(new) + "\n")
    done = run(url_list, out)
    assert done.returncode == 0, done.stderr
    after = finished_files(out)
    assert {k: v for k, v in after.items() if k in files} == files
    from proc_helpers import read_manifest
    from server import body_for

    records = {r["url"]: r for r in read_manifest(os.path.join(out, "manifest.jsonl"))}
    for i, url in enumerate(new):
        assert records[url]["status"] == "ok", records[url]
        with open(os.path.join(out, records[url]["path"]), "rb") as handle:
            assert handle.read() == body_for(f"new{i}.bin", 2000)  # the garbage part was not resumed


@pytest.fixture
def shards(server, tmp_path):
    urls = [server.url(f"/img/sh{i}.jpg?format=jpg") for i in range(4)]
    url_list = tmp_path / "urls.txt"
    url_list.write_text("\n".join(urls) + "\n")
    out = str(tmp_path / "out")
    flags = ("--output-format", "webdataset", "--shard-size", "2")
    assert run(str(url_list), out, *flags).returncode == 0
    assert {"00000.tar", "00001.tar"} <= set(os.listdir(out))
    return str(url_list), out, flags, finished_files(out)


@pytest.mark.parametrize("damage", [_all_garbage, _cut_short])
def test_a_damaged_shard_index_is_one_line_then_rebuilt(shards, damage):
    url_list, out, flags, files = shards
    damage(os.path.join(out, INDEX))
    one_line_error(run(url_list, out, *flags), "shard index", "damaged", "mv ")
    assert finished_files(out) == files
    os.replace(os.path.join(out, INDEX), os.path.join(out, INDEX + ".bad"))
    assert run(url_list, out, *flags).returncode == 0
    assert {k: v for k, v in finished_files(out).items() if k in files} == files  # read back, not rewritten


def test_an_unfinished_shard_part_is_dropped_and_the_finished_kept(shards):
    url_list, out, flags, files = shards
    with open(os.path.join(out, "00002.tar.part"), "wb") as handle:
        handle.write(b"\0" * 700)
    assert run(url_list, out, *flags).returncode == 0
    assert not os.path.exists(os.path.join(out, "00002.tar.part"))
    assert {k: v for k, v in finished_files(out).items() if k in files} == files


def test_a_garbage_shard_the_index_never_recorded_is_one_line(shards):
    url_list, out, flags, files = shards
    os.remove(os.path.join(out, INDEX))
    _all_garbage(os.path.join(out, "00001.tar"))
    one_line_error(run(url_list, out, *flags), "00001.tar", "remove the shard")
    assert finished_files(out)["00000.tar"] == files["00000.tar"]
