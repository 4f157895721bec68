"""Safe, deterministic, collision-free file names for URLs.

A URL is untrusted input: its path may hold ``..``, absolute paths, device names,
control characters or names too long for the filesystem. ``name_for_url`` turns
it into ``HOST/STEM-HASH.EXT``: one folder per host, a readable stem from the
last path segment, and 12 hex digits of the URL's SHA-1 so that two URLs ending
in ``image.jpg`` never overwrite each other. ``join_within`` is the last guard
before anything touches the disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import posixpath
from urllib.parse import unquote, urlsplit

HASH_DIGITS = 12
MAX_STEM = 80
MAX_EXT = 10
PART_SUFFIX = ".part"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_DEVICES = {
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}


def url_digest(url: str) -> str:
    """The stable short hash of a URL used to keep names distinct."""
    return hashlib.sha1(url.encode("utf-8")).hexdigest()[:HASH_DIGITS]


def safe_component(text: str, limit: int = MAX_STEM) -> str:
    """Reduce any text to one harmless path component (may return ``""``)."""
    cleaned = _UNSAFE.sub("_", text).strip("._")[:limit].strip("._")
    if cleaned.split(".")[0].lower() in _WINDOWS_DEVICES:
        cleaned = "_" + cleaned
    return cleaned


def host_folder(netloc_host: str | None, port: int | None) -> str:
    host = safe_component((netloc_host or "").lower(), limit=253) or "_"
    return f"{host}_{port}" if port else host


def name_for_url(url: str) -> str:
    """Return ``HOST/STEM-HASH.EXT`` for an http(s) URL; never escapes its folder."""
    parts = urlsplit(url)
    segment = posixpath.basename(unquote(parts.path))
    stem, ext = posixpath.splitext(segment)
    ext = safe_component(ext.lstrip("."), limit=MAX_EXT).lower()
    stem = safe_component(stem) or "index"
    filename = f"{stem}-{url_digest(url)}" + (f".{ext}" if ext else "")
    return f"{host_folder(parts.hostname, parts.port)}/{filename}"


def join_within(root: str, relative: str) -> str:
    """Join ``relative`` under ``root``; raise ValueError if it would escape.

    Like pip's ``join_within_directory``: the result can never point outside root.
    """
    root = os.path.abspath(root)
    if os.path.isabs(relative) or "\x00" in relative:
        raise ValueError(f"unsafe relative path {relative!r}")
    target = os.path.abspath(os.path.join(root, relative))
    if os.path.commonpath([root, target]) != root or target == root:
        raise ValueError(f"path {relative!r} escapes {root!r}")
    return target
