"""``--output-format webdataset``: img2dataset's shards, written by the coordinating process.

Workers are many, so none of them writes a shard: an image they re-encode (checked
and resized where it was downloaded) comes back in its Result's ``content``, and one
stored as downloaded under ``OUT/staging/SHA1.EXT`` like any download; the
coordinator, which sees every final Result once, makes it the next row of the open
shard (layout and fields: shard_rows.py): a success adds ``KEY.EXT``, ``KEY.json``
and ``KEY.txt`` to ``OUT/NNNNN.tar.part`` (a staged file is then removed); a failure
is a row of the parquet only. After ``--shard-size`` rows
the shard's parquet and stats are written and renamed into place, then the tar is
closed, flushed and renamed to ``NNNNN.tar``: the shard is finished, and its rows
are committed to the shard index (shard_index.py).

A rerun, after anything down to a ``kill -9``: finished shards are kept, and their
successful URLs are ``skipped`` before the journal sees them (``admit``), so no
sample is ever in two shards. Their failed URLs are tried again: a new success is a
row of a new shard, a new failure changes nothing (its row is in the old shard). An
unfinished shard's files are deleted; its rows are in the journal under a shard
that does not exist, so they are done again, and samples still staged are put in
the next shard without a request.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, Any

from fetcher.options.dataset import STAGE_FOLDER, STAGE_NAMING
from fetcher.download import images
from fetcher.download.durability import sync_file, sync_folders
from fetcher.errors import StorageError
from fetcher.files.naming import initial_name
from fetcher.models import ErrorKind, FetchTask, Result, Status, failed, input_extra
from fetcher.run import shard_rows
from fetcher.run.shard_index import IMAGE_FIELDS, Sample, ShardIndex, admit_batches
from fetcher.run.tar_writer import TarWriter

if TYPE_CHECKING:
    from fetcher.options import Options

NOT_ROWS = frozenset({ErrorKind.CANCELLED.value, ErrorKind.STORAGE.value})  # not a URL's outcome: done again


class ShardWriter:
    """The open shard and the index of finished ones; lives in the coordinating process only."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.out, self.size = options.output.out, options.dataset.shard_size
        self.caption = options.source.caption_column
        self.index = ShardIndex(options.output.out)
        self.number = self.index.reconcile()
        self._tar: TarWriter | None = None
        self._rows: list[dict[str, Any]] = []
        self._samples: list[Sample] = []
        self._ids: dict[str, str] = {}
        self._stats: dict[str, Any] = {}
        self._failed_before: set[str] = set()  # identities of URLs that are failed rows of finished shards
        self._busy = False

    def admit(self, items: Iterator[FetchTask | Result | None]) -> Iterator[FetchTask | Result | None]:
        """``items`` with the successes of finished shards as ``skipped`` Results, the others staged.

        Read ``shard_index.ADMIT_BATCH`` at a time, so the index is asked once per batch.
        """
        for batch in admit_batches(items):
            yield from self._admit_batch(batch)

    def _admit_batch(self, batch: list[FetchTask | Result | None]) -> Iterator[FetchTask | Result | None]:
        found = self.index.find(item.url for item in batch if isinstance(item, FetchTask))
        for item in batch:
            if not isinstance(item, FetchTask):
                yield item
                continue
            sample = found.get(item.url)
            if sample is not None and sample.ok:
                yield _finished(item, sample)
                continue
            if sample is not None:
                self._failed_before.add(sample.url)  # tried again; only a success makes a new row
            name, provisional = initial_name(item.url, item.index, STAGE_NAMING)
            yield replace(item, name=name, provisional_name=provisional)

    def rejoin(self, items: Iterator[FetchTask | Result | None]) -> Iterator[FetchTask | Result | None]:
        return items

    def add(self, result: Result) -> Result:
        """Make ``result`` the open shard's next row, if it is one; return it as the manifest should show it."""
        staged = result.path is not None and result.path.startswith(STAGE_FOLDER + "/")
        staged = staged or (result.content is not None and result.status is Status.OK)  # sent in memory
        if result.status is Status.FAILED:
            if result.error is None or result.error.kind in NOT_ROWS \
                    or self.index.identity(result.url) in self._failed_before:
                return result
        elif not staged:
            return result  # skipped: a row of a finished shard already
        # Busy until the row is whole in the tar: if a KeyboardInterrupt or a write error
        # comes in between, close() leaves the shard as .part (the next run deletes it).
        self._busy = True
        try:
            final = self._append(result, staged)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot write shard {shard_rows.shard_stem(self.number)} in {self.out}: "
                               f"{exc}") from None
        self._busy = False
        return final

    def _append(self, result: Result, staged: bool) -> Result:
        tar = self._tar or self._open()
        stem = shard_rows.shard_stem(self.number)
        key = shard_rows.sample_key(self.number, len(self._rows), self.size)
        identity = self.index.identity(result.url)
        member = None
        handle: IO[bytes] | None = None
        content = result.content
        if staged and content is not None:  # re-encoded by the worker, sent in the Result
            member = f"{key}.{images.encoded_ext(self.options)}"
            result = replace(result, content=None)  # the manifest and the journal never hold the bytes
        elif staged:
            assert result.path is not None
            member = key + os.path.splitext(result.path)[1]
            try:
                handle = open(os.path.join(self.out, result.path), "rb")
            except OSError as exc:  # gone since it was stored: a failed row, the next run tries again
                result = failed(result.url, ErrorKind.IO, f"cannot read the staged image: {exc.strerror or exc}",
                                attempts=result.attempts, index=result.index, extra=result.extra)
                member = None
        extra = {**result.extra, "key": key, "shard": stem + ".tar"}
        if member is not None and "width" not in extra:  # recovered from staging after a kill: no fields
            extra.update(_header_fields(os.path.join(self.out, str(result.path)), self.options))
        final = replace(result, path=f"{stem}.tar/{member}" if member else result.path, extra=extra)
        row = shard_rows.make_row(final, key, self.options)
        if "stored_width" in extra:  # for the row only: fetcher's manifest keeps its fields
            final = replace(final, extra={k: v for k, v in extra.items() if k not in ("stored_width", "stored_height")})
        if member is not None:
            now = int(time.time())
            if handle is None:
                assert content is not None
                tar.add(member, content, now)
            else:
                with handle:
                    tar.add_file(member, handle, os.fstat(handle.fileno()).st_size, now)
            tar.add(key + ".json", json.dumps(row, ensure_ascii=False, default=str).encode(), now)
            if self.caption is not None:
                caption = row.get("caption")
                tar.add(key + ".txt", ("" if caption is None else str(caption)).encode(), now)
            if result.path is not None:  # a staged file, now in the shard
                os.remove(os.path.join(self.out, result.path))
        image: dict[str, object] = {k: final.extra[k] for k in IMAGE_FIELDS if k in final.extra}
        self._samples.append(Sample(identity, key, self.number, member, final.bytes if member else 0,
                                    final.sha256 if member else None, image))
        if self.index.has_credentials(result.url):
            self._ids[key] = identity
        self._rows.append(row)
        shard_rows.count_row(self._stats, row)
        if len(self._rows) >= self.size:
            self._finish()
        return final

    def close(self, completed: bool) -> None:
        """End the run: finish the open shard, unless interrupted in the middle of writing it; clear the staging."""
        try:
            if self._tar is not None and not self._busy:
                self._finish()  # also on Ctrl-C: every row in it is whole
            elif self._tar is not None:
                self._abandon()
            if completed:
                shutil.rmtree(os.path.join(self.out, STAGE_FOLDER), ignore_errors=True)
        finally:
            self.index.close()

    def _abandon(self) -> None:
        """Leave the open shard as ``.part``: the next run deletes it and does its rows again."""
        try:
            self._tar.close()  # type: ignore[union-attr]
        except OSError:
            pass  # it is abandoned either way
        self._tar = None

    def _open(self) -> TarWriter:
        self._tar = TarWriter(self._path(".tar.part"))
        self._stats = shard_rows.new_stats(time.time())
        return self._tar

    def _path(self, suffix: str) -> str:
        return os.path.join(self.out, shard_rows.shard_stem(self.number) + suffix)

    def _finish(self) -> None:
        """Write the parquet and stats, then close, flush and rename the tar; record the rows."""
        assert self._tar is not None
        self._tar.close()
        self._tar = None
        parquet, stats, tar = self._path(".parquet"), self._path("_stats.json"), self._path(".tar")
        shard_rows.write_parquet(self._rows, parquet + ".part")
        with open(stats + ".part", "w", encoding="utf-8") as handle:
            handle.write(shard_rows.stats_text(self._stats, time.time()))
        for path in (parquet, stats, tar):
            sync_file(path + ".part")
        ids = self.index.write_ids(self.number, self._ids)
        os.replace(parquet + ".part", parquet)
        os.replace(stats + ".part", stats)
        sync_folders(self.out, [parquet] + ([ids] if ids else []))  # on disk before the tar says "finished"
        os.replace(tar + ".part", tar)
        sync_folders(self.out, [tar])
        self.index.add(self.number, self._samples)
        self._rows, self._samples, self._ids = [], [], {}
        self.number += 1


def _finished(task: FetchTask, sample: Sample) -> Result:
    """A URL already in a finished shard: skipped, with what its record said."""
    shard = shard_rows.shard_stem(sample.shard) + ".tar"
    return Result(url=task.url, status=Status.SKIPPED, path=f"{shard}/{sample.member}", bytes=sample.bytes,
                  sha256=sample.sha256, attempts=0, index=task.index,
                  extra={**input_extra(task.meta), **sample.image, "key": sample.key, "shard": shard})


def _header_fields(path: str, options: Options) -> dict[str, Any]:
    """The size of a staged image from its header. It is the download's only when nothing re-encoded
    it; otherwise the download's size is unknown and its row says None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - checked when it was stored; unreadable now, the row just lacks a size
        return {}
    if options.dataset.resize or options.dataset.encode_format:
        return {"stored_width": width, "stored_height": height}
    return {"width": width, "height": height}


@dataclass(frozen=True)
class Shards:
    """The webdataset step of a run (runner.RunSpec.steps): a ShardWriter, opened with the folder locked."""

    options: Options

    def open(self) -> ShardWriter:
        return ShardWriter(self.options)


@dataclass(frozen=True)
class ParquetManifest:
    """The ``--manifest-format parquet`` step: the finished JSONL manifest also as ``.parquet`` beside it."""

    path: str

    def open(self) -> ParquetManifest:
        return self

    def admit(self, items: Iterator[FetchTask | Result | None]) -> Iterator[FetchTask | Result | None]:
        return items

    rejoin = admit

    def add(self, result: Result) -> Result:
        return result

    def close(self, completed: bool) -> None:
        if completed:
            from fetcher.run.manifest_parquet import jsonl_to_parquet

            jsonl_to_parquet(self.path)
