"""Partial downloads: ``NAME.part`` plus a small ``NAME.part.meta`` that makes it resumable.

The meta file records the URL and the validator (ETag or Last-Modified) of the
response the bytes came from. A later attempt, in this run or the next, asks for
the rest with ``Range`` and ``If-Range``: a server that still has the same
representation answers 206 and the download continues; one whose file changed,
or that ignores ranges, answers 200 and the download restarts cleanly. A part
without meta cannot be resumed and is simply overwritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from fetcher.naming import PART_SUFFIX

META_SUFFIX = ".meta"


def meta_path(part: str) -> str:
    return part + META_SUFFIX


def resume_point(part: str, url: str) -> tuple[int, str] | None:
    """``(bytes already on disk, If-Range validator)`` if ``part`` can be resumed for ``url``."""
    try:
        with open(meta_path(part), encoding="utf-8") as handle:
            meta = json.load(handle)
        size = os.path.getsize(part)
    except (OSError, ValueError):
        return None
    validator = meta.get("validator") if isinstance(meta, dict) else None
    if meta.get("url") != url or not isinstance(validator, str) or size <= 0:
        return None
    return size, validator


def remember(part: str, url: str, headers: Mapping[str, str]) -> None:
    """Write the meta of a fresh download if its response can be resumed later.

    If-Range needs a strong validator: a weak ETag (``W/"..."``) does not count,
    Last-Modified does. An encoded body (gzip) is not resumable: ranges would
    count encoded bytes while the part holds decoded ones.
    """
    if headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        return
    etag = headers.get("ETag", "")
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified", "")
    if not validator or headers.get("Accept-Ranges", "bytes").strip().lower() == "none":
        return
    with open(meta_path(part), "w", encoding="utf-8") as handle:
        json.dump({"url": url, "validator": validator}, handle)


def is_resumable(part: str) -> bool:
    return os.path.exists(meta_path(part)) and os.path.exists(part)


def discard(part: str) -> None:
    """Remove a partial download and its meta, if there."""
    for path in (part, meta_path(part)):
        try:
            os.remove(path)
        except OSError:
            pass


def sweep(out: str) -> int:
    """Remove every partial file under ``out``; return how many. For a run that completed."""
    removed = 0
    for folder, _, files in os.walk(out):
        for name in files:
            if name.endswith(PART_SUFFIX) or name.endswith(PART_SUFFIX + META_SUFFIX):
                try:
                    os.remove(os.path.join(folder, name))
                    removed += 1
                except OSError:
                    pass
    return removed
