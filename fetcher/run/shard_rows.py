"""img2dataset's webdataset layout, as data: sample keys, the row of each input row, a shard's stats.

A shard holds ``--shard-size`` rows, one per input row that reached it, failures
included, in the order they finished. Its files are those img2dataset writes:

- ``NNNNN.tar``: per successful row ``KEY.EXT`` (the stored image), ``KEY.json`` (the row)
  and, with ``--caption-column``, ``KEY.txt``;
- ``NNNNN.parquet``: every row;
- ``NNNNN_stats.json``: ``count``, ``successes``, ``failed_to_download``,
  ``failed_to_resize``, ``duration``, ``start_time``, ``end_time``, ``status_dict``.

``KEY`` is ``shard * 10**ceil(log10(shard_size)) + index_in_shard``, zero-padded to
that many digits plus five (img2dataset's ``oom_shard_count``): nine by default.
A row carries the input's columns (the URL column as ``url``, the caption column as
``caption``) and ``key``, ``status``, ``error_message``, ``width``, ``height`` (of the
stored image), ``original_width``, ``original_height`` (of the download) and
``sha256`` (of the stored bytes). Nothing here touches the disk but ``write_parquet``.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from fetcher.models import ErrorKind, Result, Status
from fetcher.redact import mask, mask_extra

if TYPE_CHECKING:
    from fetcher.options import Options

SHARD_DIGITS = 5  # img2dataset's oom_shard_count
SUCCESS, FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE = "success", "failed_to_download", "failed_to_resize"
# The image step's refusals are img2dataset's resizer errors; every other failure is a download's.
RESIZE_KINDS = frozenset(k.value for k in (ErrorKind.BAD_IMAGE, ErrorKind.IMAGE_TOO_SMALL,
                                           ErrorKind.IMAGE_TOO_LARGE, ErrorKind.BAD_ASPECT_RATIO))
FIELDS = ("key", "status", "error_message", "width", "height", "original_width", "original_height", "sha256")
_TYPES = {"key": "string", "status": "string", "error_message": "string", "width": "int32", "height": "int32",
          "original_width": "int32", "original_height": "int32", "sha256": "string", "url": "string",
          "caption": "string"}


def shard_stem(number: int) -> str:
    """``00042``: the shard's files are STEM.tar, STEM.parquet and STEM_stats.json."""
    return f"{number:0{SHARD_DIGITS}d}"


def key_digits(shard_size: int) -> int:
    """``ceil(log10(shard_size))``, in integers: the digits of a sample's index in its shard."""
    digits = 0
    while 10 ** digits < shard_size:
        digits += 1
    return digits


def sample_key(shard: int, index: int, shard_size: int) -> str:
    """img2dataset's key of the ``index``-th row of shard ``shard``."""
    digits = key_digits(shard_size)
    return f"{shard * 10 ** digits + index:0{digits + SHARD_DIGITS}d}"


def row_status(result: Result) -> str:
    if result.error is None:
        return SUCCESS
    return FAILED_TO_RESIZE if result.error.kind in RESIZE_KINDS else FAILED_TO_DOWNLOAD


def stored_size(width: Any, height: Any, options: Options) -> tuple[int | None, int | None]:
    """The stored image's size, from the download's and the resize options (images.resize's rule)."""
    if not isinstance(width, int) or not isinstance(height, int) or not options.dataset.resize:
        return (width, height) if isinstance(width, int) and isinstance(height, int) else (None, None)
    if options.dataset.resize_mode in ("center_crop", "border"):
        return options.dataset.resize, options.dataset.resize
    from fetcher.download.images import target_size

    return target_size(width, height, options.dataset.resize, options.dataset.resize_mode)


def make_row(result: Result, key: str, options: Options) -> dict[str, Any]:
    """The row of one input row (``KEY.json``, a line of the shard's parquet); credentials masked."""
    row: dict[str, Any] = {"url": mask(result.url)}
    extra = mask_extra(result.extra) if result.extra else {}
    for name, value in (extra.get("input") or {}).items():
        if name == options.source.caption_column:
            name = "caption"  # img2dataset's name for its --caption_col
        elif name in FIELDS or name in ("url", "caption"):
            name = "input_" + name  # the row's own field wins; the column is kept beside it
        row[name] = value
    if options.source.caption_column is not None:
        row.setdefault("caption", None)
    status = row_status(result)
    ok = status == SUCCESS
    width, height = extra.get("width"), extra.get("height")
    stored = (stored_size(width, height, options) if "stored_width" not in extra
              else (extra["stored_width"], extra["stored_height"])) if ok else (None, None)
    error = None if result.error is None else f"{result.error.kind}: {mask(result.error.message)}"
    row.update({"key": key, "status": status, "error_message": error, "width": stored[0], "height": stored[1],
                "original_width": width if isinstance(width, int) else None,
                "original_height": height if isinstance(height, int) else None,
                "sha256": result.sha256 if ok else None})
    return row


_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_STATUSES = (SUCCESS, FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE)


def row_problem(row: dict[Any, Any]) -> str | None:
    """What keeps ``row`` (from the network: serve's rows order) from being counted and written, or None.

    A row that passed this cannot fail ``count_row`` or ``write_parquet``'s typed columns."""
    if not all(isinstance(name, str) for name in row):
        return "a column name that is not text"
    if row.get("status") not in _STATUSES:
        return "a status that is not img2dataset's"
    for name, kind in _TYPES.items():
        value = row.get(name)
        if value is None:
            continue
        if kind == "string" and not isinstance(value, str):
            return f"{name} is not text"
        if kind == "int32" and (not isinstance(value, int) or isinstance(value, bool)
                                or not _INT32[0] <= value <= _INT32[1]):
            return f"{name} is not a 32-bit whole number"
    if row["status"] != SUCCESS and not isinstance(row.get("error_message"), str):
        return "a failed row without an error message"
    return None


def new_stats(started: float) -> dict[str, Any]:
    return {"count": 0, "successes": 0, FAILED_TO_DOWNLOAD: 0, FAILED_TO_RESIZE: 0, "duration": 0.0,
            "start_time": started, "end_time": started, "status_dict": Counter()}


def count_row(stats: dict[str, Any], row: dict[str, Any]) -> None:
    """Account for one row in a shard's stats (img2dataset's status_dict counts messages)."""
    stats["count"] += 1
    status = row["status"]
    stats["successes" if status == SUCCESS else status] += 1
    stats["status_dict"][SUCCESS if status == SUCCESS else row["error_message"]] += 1


def stats_text(stats: dict[str, Any], ended: float) -> str:
    final = {**stats, "end_time": ended, "duration": ended - stats["start_time"],
             "status_dict": dict(stats["status_dict"])}
    return json.dumps(final, indent=4, ensure_ascii=False)


def write_parquet(rows: list[dict[str, Any]], path: str) -> None:
    """``rows`` as a parquet file at ``path`` (made whole by the caller's rename)."""
    import pyarrow
    import pyarrow.parquet as parquet

    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns, fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        column = _column(pyarrow, values, _TYPES.get(name))
        columns.append(column)
        fields.append(pyarrow.field(name, column.type))
    table = pyarrow.Table.from_arrays(columns, schema=pyarrow.schema(fields))
    parquet.write_table(table, path)  # flushed and renamed with its shard by the caller


def _column(pyarrow: Any, values: list[Any], kind: str | None) -> Any:
    """One column: our fields typed as img2dataset types them, input columns as pyarrow infers them."""
    if kind is not None:
        return pyarrow.array(values, type=getattr(pyarrow, kind)())
    try:
        return pyarrow.array(values)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):  # mixed types in one column: kept as text
        return pyarrow.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str)
                              for v in values], type=pyarrow.string())
