"""A worker's side of webdataset shards built across hosts: write what ``serve`` says, where it says.

``serve`` decides which rows a shard holds, their keys and their fields (run/shards.py's
layout, shard_rows.py's rows); the worker that downloaded the images writes the shard
in its own folder, in three steps, each ordered by ``serve`` (distributed/calls.py):

- ``rows``: each row's image (staged by the download as ``staging/SHA1.EXT``),
  ``KEY.json`` and ``KEY.txt`` go into ``NNNNN.tar.part``; a staged image that is gone
  makes its row a failure (reported with ``written``);
- ``seal``: the parquet and stats are written as ``.part`` and every ``.part`` is
  flushed: the shard is whole on disk, not yet final;
- ``commit``: renamed into place, the tar last (it says "finished"); the staged
  images are removed only now, so that a shard serve aborts leaves them for a retry.

Nothing here decides whether a shard counts: a shard is final only once ``serve``
recorded it, so a worker ``serve`` gave up on cannot add a sample twice.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

from fetcher.download.durability import sync_file, sync_folders
from fetcher.models import ErrorKind
from fetcher.run import shard_rows

PART_FILE = re.compile(r"^(\d{5,})(\.tar|\.parquet|_stats\.json)\.part$")
SUFFIXES = (".tar", ".parquet", "_stats.json")


@dataclass
class _Shard:
    number: int
    token: str
    tar: tarfile.TarFile | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


class ShardBuild:
    """The shards one worker is writing in ``out``, by shard id."""

    def __init__(self, out: str) -> None:
        self.out = out
        self._shards: dict[int, _Shard] = {}
        self.committed = 0

    def leftovers(self) -> list[int]:
        """Shards left whole as ``.part`` by an earlier worker here (killed between serve's commit and the
        renames): to ask serve about. Incomplete ``.part`` files are deleted: nobody counts them."""
        try:
            names = os.listdir(self.out)
        except OSError:
            return []
        parts: dict[int, set[str]] = {}
        for name in names:
            match = PART_FILE.match(name)
            if match:
                parts.setdefault(int(match.group(1)), set()).add(match.group(2))
        whole = [number for number, found in parts.items() if found == set(SUFFIXES)]
        for number, found in parts.items():
            if number not in whole:
                self._remove(number, found)
        return sorted(whole)

    def rows(self, number: int, token: str, rows: list[dict[str, Any]]) -> bool:
        """Add rows to the shard (opening its ``.tar.part`` on the first); False (nothing done) if the
        shard is open here under another token, or sealed: serve never reuses an id, so not serve's."""
        shard = self._shards.get(number)
        if shard is None:
            shard = self._shards[number] = _Shard(number, token, None, stats=shard_rows.new_stats(time.time()))
            shard.tar = tarfile.open(self._path(number, ".tar.part"), "w", format=tarfile.PAX_FORMAT)
        elif shard.token != token or shard.tar is None:
            return False
        for item in rows:
            self._add(shard, str(item["key"]), item.get("path"), dict(item["row"]))
        return True

    def _add(self, shard: _Shard, key: str, path: str | None, row: dict[str, Any]) -> None:
        assert shard.tar is not None
        if path is not None:
            staged = os.path.join(self.out, path)
            try:
                handle = open(staged, "rb")
            except OSError as exc:  # gone since it was stored: a failed row, as on one host
                message = f"{ErrorKind.IO.value}: cannot read the staged image: {exc.strerror or exc}"
                row.update({"status": shard_rows.FAILED_TO_DOWNLOAD, "error_message": message, "width": None,
                            "height": None, "sha256": None})
                shard.failed[key] = message
                path = None
            else:
                with handle:
                    info = tarfile.TarInfo(key + os.path.splitext(path)[1])
                    info.size, info.mtime, info.mode = os.fstat(handle.fileno()).st_size, int(time.time()), 0o644
                    shard.tar.addfile(info, handle)
                shard.staged.append(staged)
        if path is not None:
            _add_bytes(shard.tar, key + ".json", json.dumps(row, ensure_ascii=False, default=str).encode())
            if "caption" in row:  # present exactly when serve has a --caption-column
                caption = row["caption"]
                _add_bytes(shard.tar, key + ".txt", ("" if caption is None else str(caption)).encode())
        shard.rows.append(row)
        shard_rows.count_row(shard.stats, row)

    def seal(self, number: int, token: str, count: int) -> dict[str, Any] | None:
        """Write the parquet and stats as ``.part`` and flush all three: the report for serve (None: an
        order that is not for the shard open here, dropped by the caller)."""
        shard = self._shards.get(number)
        if shard is None:  # its rows never came (a broker that lost them): serve gives it to others
            return {"op": "broken", "shard": number, "token": token, "why": "this worker has no rows of it"}
        if shard.token != token:
            return None
        if shard.tar is None:  # sealed already: serve asks again (its report was lost)
            return {"op": "written", "shard": number, "token": token, "count": len(shard.rows),
                    "failed": shard.failed}
        if len(shard.rows) != count:
            self.abort(number)
            return {"op": "broken", "shard": number, "token": token,
                    "why": f"this worker holds {len(shard.rows)} rows of it, serve says {count}"}
        assert shard.tar is not None
        shard.tar.close()
        shard.tar = None
        shard_rows.write_parquet(shard.rows, self._path(number, ".parquet.part"))
        with open(self._path(number, "_stats.json.part"), "w", encoding="utf-8") as handle:
            handle.write(shard_rows.stats_text(shard.stats, time.time()))
        for suffix in SUFFIXES:
            sync_file(self._path(number, suffix + ".part"))
        return {"op": "written", "shard": number, "token": token, "count": count, "failed": shard.failed}

    def commit(self, number: int, token: str) -> bool:
        """Rename the shard into place (the tar last); False if it is not one sealed here under ``token``
        (``token`` empty: a leftover serve says it recorded)."""
        shard = self._shards.get(number)
        if (shard is None) == bool(token) or shard is not None and (shard.token != token or shard.tar is not None):
            return False
        if not all(os.path.exists(self._path(number, s + ".part")) for s in SUFFIXES):
            return False
        for suffix in (".parquet", "_stats.json"):
            os.replace(self._path(number, suffix + ".part"), self._path(number, suffix))
        sync_folders(self.out, [self._path(number, ".parquet")])  # on disk before the tar says "finished"
        os.replace(self._path(number, ".tar.part"), self._path(number, ".tar"))
        sync_folders(self.out, [self._path(number, ".tar")])
        for staged in shard.staged if shard is not None else ():
            try:
                os.remove(staged)
            except OSError:
                pass  # gone already: nothing needs it now
        self._shards.pop(number, None)
        self.committed += 1
        return True

    def abort(self, number: int, token: str | None = None) -> bool:
        """Forget the shard and delete its ``.part`` files; its staged images stay (for a retry).

        With ``token``, only the shard open here under that token (``""``: a leftover, not open here)."""
        if token is not None and (token != self._shards[number].token if number in self._shards else token != ""):
            return False
        shard = self._shards.pop(number, None)
        if shard is not None and shard.tar is not None:
            try:
                shard.tar.close()
            except OSError:
                pass  # deleted either way
        self._remove(number, set(SUFFIXES))
        return True

    def drop_epochs_but(self, epoch: str) -> list[int]:
        """A new serve (``epoch``): shards of earlier ones still filling are deleted; sealed ones are forgotten
        with their whole ``.part`` files kept, to ask the new serve about (the one before may have recorded
        them); returns their ids. Shards of the new serve itself (tokens ``EPOCH.``) stay."""
        sealed = []
        for number, shard in list(self._shards.items()):
            if shard.token.split(".", 1)[0] == epoch:
                continue
            if shard.tar is None:
                del self._shards[number]
                sealed.append(number)
            else:
                self.abort(number)
        return sealed

    @property
    def open(self) -> int:
        return len(self._shards)

    def _remove(self, number: int, suffixes: set[str]) -> None:
        for suffix in suffixes:
            try:
                os.remove(self._path(number, suffix + ".part"))
            except OSError:
                pass

    def _path(self, number: int, suffix: str) -> str:
        return os.path.join(self.out, shard_rows.shard_stem(number) + suffix)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))
