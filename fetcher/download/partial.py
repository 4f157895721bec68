"""Partial downloads: ``NAME.part`` plus a small ``NAME.part.meta`` that makes it resumable.

The meta file records the URL (masked: no password) and the validator (ETag or Last-Modified) of the
response the bytes came from. A later attempt, in this run or the next, asks for
the rest with ``Range`` and ``If-Range``: a server that still has the same
representation answers 206 and the download continues; one whose file changed,
or that ignores ranges, answers 200 and the download restarts cleanly. A part
without meta cannot be resumed and is simply overwritten.

The meta is written when a download starts if it is expected to be large (see
``attempt.EAGER_META_BYTES``), so that even a killed run resumes it, and
otherwise only when an attempt fails transiently or is cancelled: for small
files, one more file created and deleted per download cost more than fetching
them again after a crash.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fetcher.files.paths import PART_SUFFIX, ensure_folder, forget_folders, join_within, made_here, unmark_made
from fetcher.redact import mask

if TYPE_CHECKING:
    from fetcher.models import FetchTask
    from fetcher.options import Options

META_SUFFIX = ".meta"
WRITE_BUFFER = 128 * 1024


def meta_path(part: str) -> str:
    return part + META_SUFFIX


def read_meta(part: str, url: str, attempt: int = 1) -> tuple[tuple[int, str] | None, bool]:
    """``((bytes already on disk, If-Range validator) or None, whether a meta file exists)``.

    The first is None unless ``part`` can be resumed for ``url``; a meta file
    that exists but does not fit must be discarded before ``part`` is rewritten.

    No system call at all for a first attempt in a folder this process made and
    wrote no meta into (``paths.made_here``): no earlier run wrote there, and no
    earlier attempt of this URL ran. A retry (``attempt`` > 1) always looks, as its
    first attempt may have run in another process (the process backend).
    """
    if attempt <= 1 and made_here(os.path.dirname(part)):
        return None, False
    path = meta_path(part)
    # The common case: no meta. access() answers it with one system call and no exception
    # raised and caught (half the CPU of a failed open(), issue 8).
    if not os.access(path, os.F_OK):
        return None, False
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except FileNotFoundError:
        return None, False  # removed since
    except (OSError, ValueError):
        return None, True
    try:
        size = os.path.getsize(part)
    except OSError:
        return None, True
    validator = meta.get("validator") if isinstance(meta, dict) else None
    # Masked URLs since issue 18 (the part's name already tells URLs apart); raw ones before.
    if meta.get("url") not in (mask(url), url) or not isinstance(validator, str) or size <= 0:
        return None, True
    return (size, validator), True


OPEN_TRIES = 5  # folder made again this often when others keep emptying it (see open_part)


def open_part(part: str, offset: int) -> PartFile:
    """Open ``part`` for writing from ``offset`` (0: a new, empty file), making its folder if needed.

    A symbolic link planted under the part's name is never followed (O_NOFOLLOW).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    if not offset:
        flags |= os.O_TRUNC
    folder = os.path.dirname(part)
    ensure_folder(folder)
    for attempt in range(OPEN_TRIES):
        try:
            fd = os.open(part, flags, 0o666)
            break
        except FileNotFoundError:
            # The folder was removed since this process made it: by hand, or left empty by
            # failed downloads in it (files.paths.prune_empty) just now. Whatever else was
            # known of the folders is checked again too.
            if attempt == OPEN_TRIES - 1:
                raise
            forget_folders()
            ensure_folder(folder)
    if offset:
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            os.ftruncate(fd, offset)
        except OSError:
            os.close(fd)
            raise
    return PartFile(fd)


class PartFile:
    """A ``.part`` open for writing: a raw descriptor and a small write buffer.

    Not ``open(fd, "wb")``: that costs an fstat and an lseek per file, and a
    layer of Python objects per write, for features a sink never uses. The
    chunks of a body are held (they are immutable bytes) until ``WRITE_BUFFER``
    bytes have gathered, so a small body is one write(2), at close.
    """

    __slots__ = ("_fd", "_chunks", "_buffered")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunks: list[bytes] = []
        self._buffered = 0

    def write(self, chunk: bytes) -> int:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= WRITE_BUFFER:
            self.flush()
        return len(chunk)

    def flush(self) -> None:
        chunks = self._chunks
        if not chunks:
            return
        if len(chunks) == 1 or not _HAVE_WRITEV:
            _write_all(self._fd, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        else:  # one writev(2), no joined copy: that copy was a twentieth of a large file's CPU (issue 29)
            _writev_all(self._fd, chunks, self._buffered)
        chunks.clear()
        self._buffered = 0

    def close(self, sync: bool = False) -> None:
        """Write what is buffered and close; a second call does nothing.

        With ``sync``, the data is flushed to the disk first (fdatasync: see durability.py).
        """
        if self._fd < 0:
            return
        try:
            self.flush()
            if sync:
                getattr(os, "fdatasync", os.fsync)(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    """write(2) until all of ``data`` is written (a regular file may take less at once, e.g. near a quota)."""
    written = os.write(fd, data)
    if written == len(data):
        return  # the usual case: one call, no copy
    view = memoryview(data)[written:]
    while view:  # bounded: every round writes at least one byte, or raises
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _writev_all(fd: int, chunks: list[bytes], size: int) -> None:
    """writev(2) of ``chunks`` (``size`` bytes in all); what a short write left is written on."""
    written = os.writev(fd, chunks[:IOV_MAX])
    if written == size:
        return  # the usual case: one call, no copy
    _write_all(fd, b"".join(chunks)[written:])  # rare (near a quota, or over IOV_MAX chunks): copy once


_HAVE_WRITEV = hasattr(os, "writev")  # not on Windows: the chunks are joined there
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") and "SC_IOV_MAX" in os.sysconf_names else 16


def remember(part: str, url: str, headers: Mapping[str, str]) -> bool:
    """Write the meta of a download if its response can be resumed later; True if written.

    If-Range needs a strong validator: a weak ETag (``W/"..."``) does not count,
    Last-Modified does. An encoded body (gzip) is not resumable: ranges would
    count encoded bytes while the part holds decoded ones.
    """
    if (headers.get("Content-Encoding") or "identity").strip().lower() not in ("", "identity"):
        return False
    etag = headers.get("ETag") or ""
    validator = etag if etag and not etag.startswith("W/") else (headers.get("Last-Modified") or "")
    if not validator or (headers.get("Accept-Ranges") or "bytes").strip().lower() == "none":
        return False
    unmark_made(os.path.dirname(part))  # read_meta must look in this folder from now on
    try:
        with open(meta_path(part), "w", encoding="utf-8") as handle:
            json.dump({"url": mask(url), "validator": validator}, handle)
    except OSError:  # a full disk: the part simply is not resumable (never half a meta)
        discard_meta(part)
        return False
    return True


def is_resumable(part: str) -> bool:
    return os.path.exists(meta_path(part)) and os.path.exists(part)


def discard_meta(part: str) -> None:
    """Remove the meta of a part that has been placed under its final name."""
    try:
        os.remove(meta_path(part))
    except OSError:
        pass


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


def abandon(task: FetchTask, options: Options) -> None:
    """A task a cancelled run never heard back from (its download could not stop in time):
    its ``.part`` goes, unless a later run can resume it."""
    part = _part_of(task, options)
    if part is not None and not is_resumable(part):
        discard(part)


def give_up(task: FetchTask, options: Options) -> None:
    """A task whose last attempt ended where it ran (its worker process died): no retry will resume its ``.part``."""
    part = _part_of(task, options)
    if part is not None:
        discard(part)


def _part_of(task: FetchTask, options: Options) -> str | None:
    """The task's ``.part`` (under its initial name, as a resume finds it), or None without files."""
    if options.output.in_memory:
        return None
    try:
        return join_within(options.output.out, task.name) + PART_SUFFIX
    except ValueError:
        return None
