"""``--manifest-format parquet``: the finished JSONL manifest, also as ``manifest.parquet``.

Converted at the end of a run, ``BATCH`` records at a time, so it costs no more
memory for a million URLs than for a thousand. The columns are fixed (below):
``error`` is split into ``error_kind`` and ``error_message``, and ``input``, whose
columns differ from one input to the next, is kept as JSON text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from fetcher.files.paths import PART_SUFFIX
from fetcher.sources.parquet import pyarrow_parquet

BATCH = 10_000
COLUMNS: tuple[tuple[str, str], ...] = (
    ("url", "string"), ("status", "string"), ("path", "string"), ("bytes", "int64"), ("sha256", "string"),
    ("http_status", "int64"), ("content_type", "string"), ("final_url", "string"), ("error_kind", "string"),
    ("error_message", "string"), ("attempts", "int64"), ("elapsed_s", "float64"), ("width", "int64"),
    ("height", "int64"), ("image_format", "string"), ("original_bytes", "int64"), ("original_sha256", "string"),
    ("key", "string"), ("shard", "string"), ("input", "string"),
)


def parquet_path(manifest: str) -> str:
    """``manifest.parquet`` beside ``manifest.jsonl``."""
    return os.path.splitext(manifest)[0] + ".parquet"


def jsonl_to_parquet(manifest: str) -> str:
    """Write the parquet copy of the JSONL ``manifest`` (atomically); return its path."""
    parquet = pyarrow_parquet()
    import pyarrow

    schema = pyarrow.schema([(name, getattr(pyarrow, kind)()) for name, kind in COLUMNS])
    target = parquet_path(manifest)
    with parquet.ParquetWriter(target + PART_SUFFIX, schema) as writer:
        for batch in _batches(manifest):
            writer.write_table(pyarrow.Table.from_pylist(batch, schema=schema))
    os.replace(target + PART_SUFFIX, target)
    return target


def _batches(manifest: str) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    with open(manifest, encoding="utf-8") as handle:
        for line in handle:
            batch.append(_flat(json.loads(line)))
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    error = record.pop("error", None) or {}
    record["error_kind"], record["error_message"] = error.get("kind"), error.get("message")
    if "input" in record:
        record["input"] = json.dumps(record["input"], ensure_ascii=False)
    return record
