"""Reading img2dataset-layout shards back as its users do (tarfile, pyarrow), checking each on the way.

Shared by the local and the distributed dataset tests: ``read_folder`` returns every row of
every finished shard in a folder after checking that the shard's three files agree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections import Counter
from typing import Any

import pytest

pq = pytest.importorskip("pyarrow.parquet")
Image = pytest.importorskip("PIL.Image")

FIELDS = ("key", "status", "error_message", "width", "height", "original_width", "original_height", "sha256")


def key_digits(shard_size: int) -> int:
    return len(str(shard_size - 1)) if shard_size > 1 else 0


def expected_key(shard: int, index: int, shard_size: int) -> str:
    """img2dataset's compute_key, written out again independently of fetcher's."""
    digits = key_digits(shard_size)
    return str(shard * 10 ** digits + index).zfill(digits + 5)


def tar_members(path: str) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        members = {}
        for member in tar:
            handle = tar.extractfile(member)
            assert handle is not None
            members[member.name] = handle.read()
    return members


def read_folder(out: str, shard_size: int, caption: bool = False) -> list[dict[str, Any]]:
    """Every row of every finished shard in ``out``, each shard checked whole; no unfinished file may remain."""
    names = os.listdir(out)
    assert not [n for n in names if n.endswith(".part")], names
    stems = sorted(n[:-4] for n in names if re.fullmatch(r"\d{5,}\.tar", n))
    assert sorted(n[:-8] for n in names if n.endswith(".parquet") and n != "manifest.parquet") == stems
    assert sorted(n[: -len("_stats.json")] for n in names if n.endswith("_stats.json")) == stems
    rows: list[dict[str, Any]] = []
    for stem in stems:
        rows += check_shard(os.path.join(out, stem), int(stem), shard_size, caption)
    return rows


def check_shard(stem: str, number: int, shard_size: int, caption: bool) -> list[dict[str, Any]]:
    """One shard's tar, parquet and stats, field by field; its rows."""
    rows = pq.read_table(stem + ".parquet").to_pylist()
    assert 0 < len(rows) <= shard_size
    assert [r["key"] for r in rows] == [expected_key(number, i, shard_size) for i in range(len(rows))]
    members = tar_members(stem + ".tar")
    successes = [r for r in rows if r["status"] == "success"]
    expected_members = set()
    for row in successes:
        key = row["key"]
        [image] = [n for n in members if n.startswith(key + ".") and n.rsplit(".", 1)[1] not in ("json", "txt")]
        expected_members |= {image, key + ".json"} | ({key + ".txt"} if caption else set())
        assert json.loads(members[key + ".json"]) == row  # KEY.json is the parquet's row
        assert hashlib.sha256(members[image]).hexdigest() == row["sha256"]
        with Image.open(io.BytesIO(members[image])) as picture:
            picture.load()
            assert picture.size == (row["width"], row["height"])
        assert row["error_message"] is None and row["original_width"] and row["original_height"]
        if caption:
            assert members[key + ".txt"].decode() == (row["caption"] or "")
    assert set(members) == expected_members  # failed rows have no member
    for row in rows:
        assert set(FIELDS) <= set(row) and row["url"]
        if row["status"] != "success":
            assert row["status"] in ("failed_to_download", "failed_to_resize") and row["error_message"]
            assert row["sha256"] is None and row["width"] is None
    with open(stem + "_stats.json", encoding="utf-8") as handle:
        stats = json.load(handle)
    statuses = Counter(r["status"] for r in rows)
    assert stats["count"] == len(rows) and stats["successes"] == statuses["success"]
    assert stats["failed_to_download"] == statuses["failed_to_download"]
    assert stats["failed_to_resize"] == statuses["failed_to_resize"]
    assert stats["status_dict"] == dict(Counter("success" if r["status"] == "success" else r["error_message"]
                                                for r in rows))
    assert stats["start_time"] <= stats["end_time"]
    assert stats["duration"] == pytest.approx(stats["end_time"] - stats["start_time"])
    return rows
