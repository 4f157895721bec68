"""Parquet input: the files LAION, DataComp and CC12M ship, read lazily by row group with pyarrow.

One row group is read at a time, and handed on in batches of ``BATCH_ROWS``
rows, so a file of many millions of rows never sits in memory (a row group is
the unit parquet writers choose for readers: typically some MB). Every column
becomes a field of the row: the URL column as ``url``, the others carried into
the manifest under ``"input"``. Values that JSON cannot hold are made to fit:
NaN and infinities become null, bytes become base64 text, dates ISO 8601 text.
pyarrow is the optional extra ``fetcher[datasets]``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import os
from collections.abc import Iterator
from typing import Any

from fetcher.errors import ConfigError
from fetcher.sources.rows import Row

BATCH_ROWS = 1024
INSTALL_HINT = "pip install 'fetcher-dl[datasets]' (pyarrow and Pillow; '.[datasets]' in a checkout)"


def parquet_rows(path: str, url_column: str = "url") -> Iterator[Row]:
    """Yield the rows of a parquet file; a row's ``line`` is its 1-based row number.

    Raises:
        ConfigError: pyarrow is missing, the file is not readable parquet, or it has no ``url_column``.
    """
    parquet = pyarrow_parquet()
    if path == "-":
        raise ConfigError("parquet input must be a file, not standard input (a parquet reader seeks)")
    try:
        reader = parquet.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise ConfigError(f"cannot read parquet input {path!r}: {exc}") from None
    with reader:
        names = reader.schema_arrow.names
        url_name = next((name for name in names if name.lower() == url_column.lower()), None)
        if url_name is None:
            shown = ", ".join(repr(name) for name in names[:10]) or "none"
            raise ConfigError(f"input {path!r} has no {url_column!r} column (columns: {shown})")
        order = [url_name] + [name for name in names if name != url_name]
        line = 0
        for group in range(reader.num_row_groups):
            try:
                batches = reader.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=order)
                for batch in batches:
                    for record in batch.to_pylist():
                        line += 1
                        yield _row(line, record, url_name)
            except (OSError, ValueError) as exc:  # a corrupt row group: the rows read so far still run
                yield Row(line + 1, error=f"cannot read row group {group} of the parquet input: {exc}", raw=path)
                return


def count_rows(path: str) -> int | None:
    """The row count from the file's footer (for the progress bar); None if it cannot be read."""
    try:
        parquet = pyarrow_parquet()
        return int(parquet.ParquetFile(path).metadata.num_rows)
    except (ConfigError, OSError, ValueError):
        return None


def _row(line: int, record: dict[str, Any], url_name: str) -> Row:
    fields = {"url" if name == url_name else name: _json_safe(value) for name, value in record.items()}
    url = fields.get("url")
    return Row(line, fields, raw=url if isinstance(url, str) else f"row {line}")


def _json_safe(value: Any) -> Any:
    """A parquet value as something the JSONL manifest can hold, as close to it as JSON allows."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return str(value)


def pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, imported with the system allocator unless the environment chose one.

    pyarrow's default allocator (mimalloc) keeps freed row groups' memory: reading a
    million rows in groups of 100,000 peaked at 128 MiB with it, 76 MiB with the
    system allocator (measured, pyarrow 26). ``ARROW_DEFAULT_MEMORY_POOL`` is read
    when pyarrow is first imported, so this holds only if nothing imported it before.
    """
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    try:
        import pyarrow.parquet
    except ImportError:
        raise ConfigError(f"parquet input needs pyarrow, which is not installed: {INSTALL_HINT}") from None
    return pyarrow.parquet
