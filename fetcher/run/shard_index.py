"""Which URLs are rows of finished webdataset shards: ``OUT/.fetcher/shards.sqlite3``.

It sits beside the journal, in its own file because the journal holds a write
transaction open between its batched commits, and a second writer on the same
file would wait on it. The finished shards themselves are the truth: a shard's
parquet is renamed into place before its tar, and its tar before its rows are
committed here, so when a run is killed between the two, the next one reads that
shard's parquet back and records it. Only the coordinating process opens it, from one thread.

A URL is found by the SHA-1 of its journal identity (``redact.UrlKeys``). A URL
with credentials is shown masked in a shard; its identity (a keyed MAC) is kept
in ``.fetcher/shards/STEM.ids.json`` so that a read-back still knows it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from typing import Any

from fetcher.errors import ConfigError
from fetcher.redact import UrlKeys
from fetcher.run.journal import JOURNAL_DIR
from fetcher.run.shard_rows import SUCCESS, shard_stem

INDEX_NAME = "shards.sqlite3"
IDS_FOLDER = "shards"
SHARD_FILE = re.compile(r"^(\d{5,})(\.tar|\.parquet|_stats\.json)(\.part)?$")
_SQL_BATCH = 500
IMAGE_FIELDS = ("width", "height", "image_format", "original_bytes", "original_sha256")  # kept per sample

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, samples INTEGER NOT NULL, finished REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shard_rows (
    url TEXT PRIMARY KEY, shard INTEGER NOT NULL, key TEXT NOT NULL, member TEXT, bytes INTEGER NOT NULL,
    sha256 TEXT, image TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS homes (id INTEGER PRIMARY KEY, home TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS next_shard (one INTEGER PRIMARY KEY CHECK (one = 0), value INTEGER NOT NULL);
"""
# A later success replaces an earlier failure of the same URL; nothing replaces a success.
_UPSERT = ("INSERT INTO shard_rows VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(url) DO UPDATE SET "
           "shard = excluded.shard, key = excluded.key, member = excluded.member, bytes = excluded.bytes, "
           "sha256 = excluded.sha256, image = excluded.image WHERE shard_rows.member IS NULL")



ADMIT_BATCH = 256
_Item = TypeVar("_Item")


def admit_batches(items: Iterable[_Item], size: int = ADMIT_BATCH) -> Iterator[list[_Item]]:
    """``items`` in lists of at most ``size``, each ending early at a None (the run's "nothing now"),
    so a step asks the index once per list and never holds back an item past a pause."""
    batch: list[_Item] = []
    for item in items:
        batch.append(item)
        if item is None or len(batch) >= size:
            yield batch
            batch = []
    yield batch


@dataclass(frozen=True, slots=True)
class Sample:
    """A row of a finished shard: its key, its image member (``KEY.EXT``, None for a failed row)
    and what its record said; ``url`` is the SHA-1 of the URL's identity."""

    url: str
    key: str
    shard: int
    member: str | None
    bytes: int
    sha256: str | None
    image: dict[str, object]

    @property
    def ok(self) -> bool:
        return self.member is not None


class ShardIndex:
    """The rows of every finished shard of one output folder, by URL."""

    def __init__(self, out: str) -> None:
        folder = os.path.join(out, JOURNAL_DIR)
        os.makedirs(folder, exist_ok=True)
        self._keys = UrlKeys(folder)
        self._ids = os.path.join(folder, IDS_FOLDER)
        path = os.path.join(folder, INDEX_NAME)
        self._db = sqlite3.connect(path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            earlier = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'samples'").fetchone()
            if not earlier:
                self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:  # garbage, or cut short: derived data, rebuilt from the shards
            self._db.close()
            raise ConfigError(f"the shard index {path!r} is damaged ({exc}): move it aside (mv {path} "
                              f"{path}.bad) and run again; it is rebuilt from the finished shards") from None
        if earlier:
            self._db.close()
            raise ConfigError(f"{out!r} holds shards of fetcher's earlier webdataset layout (SHA-1 keys); "
                              "write img2dataset's layout into a new --out")
        self.out = out

    def close(self) -> None:
        self._db.close()

    def identity(self, url: str) -> str:
        """The SHA-1 of ``url``'s journal identity: what the index finds it by."""
        return hashlib.sha1(self._keys.key(url).encode("utf-8", "surrogatepass")).hexdigest()

    def has_credentials(self, url: str) -> bool:
        return self._keys.key(url) != url

    def write_ids(self, number: int, ids: dict[str, str]) -> str | None:
        """Keep the identities of a shard's credential URLs (key -> identity); the file's path, if any."""
        path = os.path.join(self._ids, shard_stem(number) + ".ids.json")
        if not ids:
            if os.path.exists(path):
                os.remove(path)  # a forgotten shard's, under a number used again
            return None
        os.makedirs(self._ids, exist_ok=True)
        with open(path + ".part", "w", encoding="utf-8") as handle:
            json.dump(ids, handle)
        os.replace(path + ".part", path)
        return path

    def reconcile(self) -> int:
        """Record the finished shards the index lacks, drop unfinished files; the next shard number."""
        known = {row[0] for row in self._db.execute("SELECT id FROM shards")}
        names = os.listdir(self.out)
        tars = {int(m.group(1)) for m in map(SHARD_FILE.match, names) if m and m.group(2, 3) == (".tar", None)}
        self._forget(known - tars)  # deleted by hand: their rows are fetched again
        highest = max(tars, default=-1)
        for name in names:
            match = SHARD_FILE.match(name)
            if match and (match.group(3) or int(match.group(1)) not in tars):
                os.remove(os.path.join(self.out, name))  # an unfinished shard's: its rows are done again
        for number in sorted(tars - known):
            self.add(number, self._read_back(number))
        return highest + 1

    def _forget(self, numbers: set[int]) -> None:
        if numbers:
            self._db.execute("BEGIN")
            for number in numbers:
                self._db.execute("DELETE FROM shard_rows WHERE shard = ?", (number,))
                self._db.execute("DELETE FROM shards WHERE id = ?", (number,))
            self._db.execute("COMMIT")

    def allocate(self) -> int:
        """A shard id never handed out before in this folder (``serve``: ids unique across every worker's)."""
        self._db.execute("BEGIN IMMEDIATE")
        row = self._db.execute("SELECT value FROM next_shard WHERE one = 0").fetchone()
        known = self._db.execute("SELECT max(id) FROM shards").fetchone()[0]
        number = max(row[0] if row else 0, -1 if known is None else known + 1)
        self._db.execute("INSERT OR REPLACE INTO next_shard VALUES (0, ?)", (number + 1,))
        self._db.execute("COMMIT")
        return number

    def home(self, number: int) -> dict[str, str] | None:
        """Which worker folder holds shard ``number`` (``serve``'s index), if it was built across hosts."""
        row = self._db.execute("SELECT home FROM homes WHERE id = ?", (number,)).fetchone()
        return json.loads(row[0]) if row else None

    def counts(self) -> tuple[int, int]:
        """Finished shards and their rows."""
        shards, rows = self._db.execute("SELECT count(*), coalesce(sum(samples), 0) FROM shards").fetchone()
        return int(shards), int(rows)

    def add(self, number: int, samples: list[Sample], home: dict[str, str] | None = None) -> None:
        """Commit a finished shard and its rows in one transaction (``home``: the worker folder holding it)."""
        self._db.execute("BEGIN")
        if home is not None:
            self._db.execute("INSERT OR REPLACE INTO homes VALUES (?, ?)", (number, json.dumps(home)))
        self._db.executemany(_UPSERT, [(s.url, s.shard, s.key, s.member, s.bytes, s.sha256, json.dumps(s.image))
                                       for s in samples])
        self._db.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?)", (number, len(samples), time.time()))
        self._db.execute("COMMIT")

    def find(self, urls: Iterable[str]) -> dict[str, Sample]:
        """The rows among ``urls`` that a finished shard holds, by URL."""
        by_id = {self.identity(url): url for url in urls}
        wanted = list(by_id)
        found: dict[str, Sample] = {}
        for start in range(0, len(wanted), _SQL_BATCH):
            chunk = wanted[start:start + _SQL_BATCH]
            for ident, shard, key, member, size, sha256, image in self._db.execute(
                    "SELECT url, shard, key, member, bytes, sha256, image FROM shard_rows WHERE url IN "
                    f"({','.join('?' * len(chunk))})", chunk):
                found[by_id[ident]] = Sample(ident, key, shard, member, size, sha256,
                                             json.loads(image) if image else {})
        return found

    def _read_back(self, number: int) -> list[Sample]:
        """The rows of a finished shard the index never recorded: its parquet, its tar's members."""
        stem = os.path.join(self.out, shard_stem(number))
        members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(stem + ".tar", "r") as tar:
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    if ext not in ("json", "txt"):
                        members[key] = member
        except (tarfile.TarError, OSError, EOFError) as exc:  # garbage, or cut short by hand
            detail = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
            raise ConfigError(f"cannot read {stem + '.tar'!r} back ({detail}); remove the "
                              "shard's .tar to fetch it again") from None
        ids: dict[str, str] = {}
        try:
            with open(os.path.join(self._ids, shard_stem(number) + ".ids.json"), encoding="utf-8") as handle:
                loaded = json.load(handle)
            ids = loaded if isinstance(loaded, dict) else {}
        except FileNotFoundError:
            pass
        except ValueError:  # damaged (UnicodeDecodeError is one too): the URLs' own identities, as without it
            ids = {}
        return [_sample(row, number, members.get(str(row["key"])), ids.get(str(row["key"]))
                        or self.identity(str(row["url"]))) for row in _parquet_rows(stem + ".parquet")]


def _parquet_rows(path: str) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as parquet

        columns = ["key", "url", "status", "sha256", "original_width", "original_height"]
        return list(parquet.read_table(path, columns=columns).to_pylist())
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"cannot read {path!r} back ({exc}); remove the shard's .tar to fetch it again") from None


def _sample(row: dict[str, Any], number: int, member: tarfile.TarInfo | None, identity: str) -> Sample:
    ok = row["status"] == SUCCESS and member is not None
    image = {"width": row["original_width"], "height": row["original_height"]} if ok else {}
    return Sample(identity, str(row["key"]), number, member.name if ok and member else None,
                  member.size if ok and member else 0, row["sha256"] if ok else None, image)


def shard_summary(out: str) -> str | None:
    """One line on the webdataset shards of ``out`` (finished, with their rows, and in progress), or None.

    Read from the files alone, never the index, so it is safe beside a running build.
    """
    try:
        names = os.listdir(out)
    except OSError:
        return None
    matches = [m for m in map(SHARD_FILE.match, names) if m]
    finished = sorted(m.group(1) for m in matches if m.group(2, 3) == (".tar", None))
    open_parts = sorted(m.group(0) for m in matches if m.group(2, 3) == (".tar", ".part"))
    if not finished and not open_parts:
        return None
    totals = {"count": 0, "successes": 0, "failed_to_download": 0, "failed_to_resize": 0}
    for stem in finished:
        try:
            with open(os.path.join(out, stem + "_stats.json"), encoding="utf-8") as handle:
                stats = json.load(handle)
            for name in totals:
                totals[name] += int(stats.get(name, 0))
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # a stats file damaged by hand: its shard is still counted
    line = (f"webdataset: {len(finished)} shards finished ({totals['count']:,} rows: {totals['successes']:,} "
            f"success, {totals['failed_to_download']:,} failed_to_download, "
            f"{totals['failed_to_resize']:,} failed_to_resize)")
    if open_parts:
        sizes = []
        for name in open_parts:
            try:
                sizes.append(f"{name} ({os.path.getsize(os.path.join(out, name)):,} bytes)")
            except OSError:
                continue  # finished or removed meanwhile
        line += "; in progress: " + (", ".join(sizes) or "none")
    return line



def homes_summary(out: str) -> str | None:
    """One line on the shards a ``serve`` run of ``out`` had its workers write (its index, read-only), or None."""
    path = os.path.join(out, JOURNAL_DIR, INDEX_NAME)
    if not os.path.exists(path):
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            homes = [json.loads(row[0]) for row in db.execute("SELECT home FROM homes")]
            rows = db.execute("SELECT coalesce(sum(samples), 0) FROM shards WHERE id IN (SELECT id FROM homes)"
                              ).fetchone()[0]
        finally:
            db.close()
    except (sqlite3.Error, ValueError):
        return None  # no such table (a one-host build), or damaged: nothing to say here
    if not homes:
        return None
    folders = sorted({f"{h.get('host', '?')}:{h.get('out', '?')}" for h in homes if isinstance(h, dict)})
    return (f"webdataset across hosts: {len(homes)} shards finished ({rows:,} rows) in {len(folders)} worker "
            f"folder{'s' if len(folders) != 1 else ''}: " + ", ".join(folders))
