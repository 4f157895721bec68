"""Which samples are in finished webdataset shards: ``OUT/.fetcher/shards.sqlite3``.

It sits beside the journal, in its own file because the journal holds a write
transaction open between its batched commits, and a second writer on the same
file would wait on it. The finished shards themselves are the truth: a shard
is renamed from ``.part`` before its samples are committed here, so when a run
is killed between the two, the next one reads that shard back (``tarfile``)
and records it. Only the coordinating process opens it, from one thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass

from fetcher.redact import UrlKeys
from fetcher.run.journal import JOURNAL_DIR

INDEX_NAME = "shards.sqlite3"
SHARD_NAME = re.compile(r"^(\d{5,})\.tar$")
_SQL_BATCH = 500
IMAGE_FIELDS = ("width", "height", "image_format", "original_bytes", "original_sha256")  # kept per sample

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, samples INTEGER NOT NULL, finished REAL NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    key TEXT PRIMARY KEY, shard INTEGER NOT NULL, member TEXT NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT,
    image TEXT
) WITHOUT ROWID;
"""


def shard_name(number: int) -> str:
    return f"{number:05d}.tar"


@dataclass(frozen=True, slots=True)
class Sample:
    """A sample of a finished shard: its key, its image member (``KEY.EXT``) and what its record said."""

    key: str
    shard: int
    member: str
    bytes: int
    sha256: str | None
    image: dict[str, object]


class ShardIndex:
    """The samples of every finished shard of one output folder, by sample key.

    A sample's key is the SHA-1 of the URL's journal identity (``redact.UrlKeys``): the URL itself
    when it holds no credentials, so neither the index nor a shard's member names hold a password,
    and a key can be read back from a member name alone.
    """

    def __init__(self, out: str) -> None:
        folder = os.path.join(out, JOURNAL_DIR)
        os.makedirs(folder, exist_ok=True)
        self._keys = UrlKeys(folder)
        self._db = sqlite3.connect(os.path.join(folder, INDEX_NAME), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self.out = out

    def close(self) -> None:
        self._db.close()

    def sample_key(self, url: str) -> str:
        """The key of ``url``'s sample: its members are ``KEY.EXT``, ``KEY.json``."""
        return hashlib.sha1(self._keys.key(url).encode("utf-8", "surrogatepass")).hexdigest()

    def reconcile(self) -> int:
        """Record the shards on disk that the index lacks, drop unfinished ``.part`` shards; the next shard number."""
        known = {row[0] for row in self._db.execute("SELECT id FROM shards")}
        on_disk = {int(m.group(1)) for m in map(SHARD_NAME.match, os.listdir(self.out)) if m}
        self._forget(known - on_disk)  # deleted by hand: their samples are fetched again
        highest = -1
        for name in sorted(os.listdir(self.out)):
            if name.endswith(".tar.part") and SHARD_NAME.match(name[:-5]):
                os.remove(os.path.join(self.out, name))  # interrupted: its samples are fetched or rebuilt again
                continue
            match = SHARD_NAME.match(name)
            if match is None:
                continue
            number = int(match.group(1))
            highest = max(highest, number)
            if number not in known:
                self.add(number, _read_back(os.path.join(self.out, name), number))
        return highest + 1

    def _forget(self, numbers: set[int]) -> None:
        if numbers:
            self._db.execute("BEGIN")
            for number in numbers:
                self._db.execute("DELETE FROM samples WHERE shard = ?", (number,))
                self._db.execute("DELETE FROM shards WHERE id = ?", (number,))
            self._db.execute("COMMIT")

    def add(self, number: int, samples: list[Sample]) -> None:
        """Commit a finished shard and its samples in one transaction."""
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?)",
                             [(s.key, s.shard, s.member, s.bytes, s.sha256, json.dumps(s.image)) for s in samples])
        self._db.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?)", (number, len(samples), time.time()))
        self._db.execute("COMMIT")

    def find(self, urls: Iterable[str]) -> dict[str, Sample]:
        """The samples among ``urls`` that a finished shard holds, by URL."""
        by_key = {self.sample_key(url): url for url in urls}
        wanted = list(by_key)
        found: dict[str, Sample] = {}
        for start in range(0, len(wanted), _SQL_BATCH):
            chunk = wanted[start:start + _SQL_BATCH]
            for key, shard, member, size, sha256, image in self._db.execute(
                    "SELECT key, shard, member, bytes, sha256, image FROM samples WHERE key IN "
                    f"({','.join('?' * len(chunk))})", chunk):
                found[by_key[key]] = Sample(key, shard, member, size, sha256, json.loads(image) if image else {})
        return found


def _read_back(path: str, number: int) -> list[Sample]:
    """The samples of a finished shard the index never recorded, from its ``KEY.json`` members."""
    images: dict[str, str] = {}
    records: list[tuple[str, dict[str, object]]] = []
    with tarfile.open(path, "r") as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if ext == "json":
                handle = tar.extractfile(member)
                if handle is not None:
                    records.append((key, json.load(handle)))
            elif ext != "txt":
                images[key] = member.name
    samples = []
    for key, record in records:
        if key in images:
            image: dict[str, object] = {name: record[name] for name in IMAGE_FIELDS if name in record}
            sha256 = record.get("sha256")
            samples.append(Sample(key, number, images[key], int(str(record.get("bytes", 0))),
                                  sha256 if isinstance(sha256, str) else None, image))
    return samples
