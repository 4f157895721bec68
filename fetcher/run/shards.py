"""``--output-format webdataset``: samples written into tar shards by the coordinating process.

Workers are many, so none of them writes a shard: each stores its image (checked
and resized where it was downloaded) under ``OUT/staging/SHA1.EXT`` like any
download, and the coordinator, which sees every final Result once, appends it to
the open shard ``OUT/NNNNN.tar.part`` as ``KEY.EXT``, ``KEY.json`` (the sample's
manifest record) and ``KEY.txt`` (``--caption-column``), then removes the staged
file. ``KEY`` is the SHA-1 of the canonical URL. After ``--shard-size`` samples
the shard is closed, flushed to disk, renamed to ``NNNNN.tar``, its stats written
to ``NNNNN_stats.json``, and its samples committed to the shard index
(shard_index.py).

A rerun, after anything down to a ``kill -9``: finished shards are kept, and their
URLs are ``skipped`` before the journal sees them (``admit``), so no sample is
ever in two shards. An unfinished ``.part`` shard is deleted; its samples are in
the journal as ``NNNNN.tar/KEY.EXT`` of a shard that does not exist, so they are
fetched again, and samples still staged are put in the next shard without a request.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
import sqlite3
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fetcher.options.dataset import STAGE_FOLDER, STAGE_NAMING
from fetcher.download.durability import sync_file, sync_folders
from fetcher.errors import StorageError
from fetcher.files.naming import initial_name
from fetcher.models import ErrorKind, FetchTask, Result, Status, failed, input_extra
from fetcher.run.shard_index import IMAGE_FIELDS, Sample, ShardIndex, shard_name

if TYPE_CHECKING:
    from fetcher.options import Options

ADMIT_BATCH = 256


class ShardWriter:
    """The open shard and the index of finished ones; lives in the coordinating process only."""

    def __init__(self, options: Options) -> None:
        self.out, self.size = options.output.out, options.dataset.shard_size
        self.caption = options.source.caption_column
        self.index = ShardIndex(options.output.out)
        self.number = self.index.reconcile()
        self._tar: tarfile.TarFile | None = None
        self._samples: list[Sample] = []
        self._stats: dict[str, Any] = {}
        self._busy = False

    def admit(self, items: Iterator[FetchTask | Result | None]) -> Iterator[FetchTask | Result | None]:
        """``items`` with the URLs of finished shards as ``skipped`` Results, the others staged.

        Read ``ADMIT_BATCH`` at a time, so the index is asked once per batch.
        """
        batch: list[FetchTask | Result | None] = []
        for item in items:
            batch.append(item)
            if item is None or len(batch) >= ADMIT_BATCH:
                yield from self._admit_batch(batch)
                batch = []
        yield from self._admit_batch(batch)

    def _admit_batch(self, batch: list[FetchTask | Result | None]) -> Iterator[FetchTask | Result | None]:
        found = self.index.find(item.url for item in batch if isinstance(item, FetchTask))
        for item in batch:
            if not isinstance(item, FetchTask):
                yield item
            elif item.url in found:
                yield _finished(item, found[item.url])
            else:
                name, provisional = initial_name(item.url, item.index, STAGE_NAMING)
                yield replace(item, name=name, provisional_name=provisional)

    def add(self, result: Result) -> Result:
        """Put a staged sample into the open shard; return its Result as the manifest should show it."""
        if result.path is None or not result.path.startswith(STAGE_FOLDER + "/"):
            if result.error is not None and self._tar is not None:
                self._stats["failures"][result.error.kind] += 1
            return result
        # Busy until the sample is whole in the tar: if a KeyboardInterrupt or a write error
        # comes in between, close() leaves the shard as .part (the next run deletes it).
        self._busy = True
        try:
            final = self._append(result)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot write shard {shard_name(self.number)} in {self.out}: {exc}") from None
        self._busy = False
        return final

    def _append(self, result: Result) -> Result:
        assert result.path is not None
        staged = os.path.join(self.out, result.path)
        key = self.index.sample_key(result.url)
        member = key + posixpath.splitext(result.path)[1]
        try:
            handle = open(staged, "rb")
        except OSError as exc:  # gone since it was stored: the next run fetches it again
            return failed(result.url, ErrorKind.IO, f"cannot read the staged image: {exc.strerror or exc}",
                          attempts=result.attempts, index=result.index, extra=result.extra)
        tar = self._tar or self._open()
        final = replace(result, path=f"{shard_name(self.number)}/{member}",
                        extra={**result.extra, "key": key, "shard": shard_name(self.number)})
        info = tarfile.TarInfo(member)
        info.size, info.mtime, info.mode = os.fstat(handle.fileno()).st_size, int(time.time()), 0o644
        with handle:
            tar.addfile(info, handle)
        _add_bytes(tar, key + ".json", json.dumps(final.to_record(), ensure_ascii=False).encode())
        if self.caption is not None:
            caption = (result.extra.get("input") or {}).get(self.caption)
            _add_bytes(tar, key + ".txt", ("" if caption is None else str(caption)).encode())
        os.remove(staged)
        image: dict[str, object] = {k: final.extra[k] for k in IMAGE_FIELDS if k in final.extra}
        self._samples.append(Sample(key, self.number, member, final.bytes, final.sha256, image))
        self._stats["bytes"] += final.bytes
        self._stats["formats"][str(image.get("image_format", posixpath.splitext(member)[1][1:]))] += 1
        if len(self._samples) >= self.size:
            self._finish()
        return final

    def close(self, completed: bool) -> None:
        """End the run: finish the open shard, unless interrupted in the middle of writing it; clear the staging."""
        try:
            if self._tar is not None and not self._busy:
                self._finish()  # also on Ctrl-C: every sample in it is whole
            elif self._tar is not None:
                self._abandon()
            if completed:
                shutil.rmtree(os.path.join(self.out, STAGE_FOLDER), ignore_errors=True)
        finally:
            self.index.close()

    def _abandon(self) -> None:
        """Leave the open shard as ``.part``: the next run deletes it and fetches its samples again."""
        try:
            self._tar.close()  # type: ignore[union-attr]
        except OSError:
            pass  # it is abandoned either way
        self._tar = None

    def _open(self) -> tarfile.TarFile:
        self._tar = tarfile.open(self._part_path(), "w", format=tarfile.PAX_FORMAT)
        self._stats = {"started": time.time(), "bytes": 0, "formats": Counter(), "failures": Counter()}
        return self._tar

    def _part_path(self) -> str:
        return os.path.join(self.out, shard_name(self.number) + ".part")

    def _finish(self) -> None:
        """Close, flush and rename the open shard, write its stats, record its samples."""
        assert self._tar is not None
        self._tar.close()
        self._tar = None
        part, final = self._part_path(), os.path.join(self.out, shard_name(self.number))
        sync_file(part)
        os.replace(part, final)
        sync_folders(self.out, [final])
        stats = {"shard": shard_name(self.number), "samples": len(self._samples), "tar_bytes": os.path.getsize(final),
                 **self._stats, "finished": time.time()}
        stats["seconds"] = round(stats["finished"] - stats["started"], 3)
        stats_path = os.path.join(self.out, f"{self.number:05d}_stats.json")
        with open(stats_path + ".part", "w", encoding="utf-8") as handle:
            json.dump(stats, handle, indent=1)
        os.replace(stats_path + ".part", stats_path)
        self.index.add(self.number, self._samples)
        self._samples = []
        self.number += 1


def _finished(task: FetchTask, sample: Sample) -> Result:
    """A URL already in a finished shard: skipped, with what its record said."""
    shard = shard_name(sample.shard)
    return Result(url=task.url, status=Status.SKIPPED, path=f"{shard}/{sample.member}", bytes=sample.bytes,
                  sha256=sample.sha256, attempts=0, index=task.index,
                  extra={**input_extra(task.meta), **sample.image, "key": sample.key,
                         "shard": shard})


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def open_shards(options: Options) -> ShardWriter | None:
    """The run's ShardWriter with webdataset output, else None; called with the output folder locked."""
    return ShardWriter(options) if options.dataset.output_format == "webdataset" else None


def write_manifest_copy(options: Options) -> None:
    """With ``--manifest-format parquet``, the finished JSONL manifest also as ``.parquet`` beside it."""
    if options.output.manifest_format == "parquet":
        from fetcher.run.manifest_parquet import jsonl_to_parquet

        jsonl_to_parquet(options.output.manifest_path)
