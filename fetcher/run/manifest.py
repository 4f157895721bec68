"""The manifest file: JSONL written to ``NAME.part`` as results come, renamed into place at the end.

Whatever ends the run (all done, Ctrl-C, a full or read-only disk), the file
that gets the final name holds whole lines only: the manifest is written in
batches of complete lines with plain ``write(2)`` calls, so after a failed
write the file is cut back to the end of the last line that was written
whole, and only then renamed. A reader never finds a half line under the
final name. If even the rename is refused (a disk that became read-only),
the records so far stay in ``NAME.part`` and the error says so.

One manifest per run, none lost: the manifest holds this run's records (one per unique URL
of its input). A manifest an earlier run left under the same name, and the ``.part`` of a
run that was killed, are first renamed to ``NAME.YYYYMMDDTHHMMSS.EXT`` (when they were last
written), so in a reused folder no run's records disappear (``set_aside``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from fetcher.errors import ConfigError, StorageError
from fetcher.files.paths import PART_SUFFIX

FLUSH_BYTES = 64 * 1024  # lines gathered before one write(2)
# One encoder for every line: json.dumps(..., ensure_ascii=False) builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def check_manifest_path(path: str) -> None:
    """Refuse, before anything is fetched, a manifest location that cannot work.

    Raises:
        ConfigError: ``path`` is a folder, or its folder is a file.
    """
    if os.path.isdir(path):
        raise ConfigError(f"manifest {path!r} is a folder: give a file name (--manifest FILE)")
    folder = os.path.dirname(path) or "."
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"manifest {path!r} cannot be written: {folder!r} is a file, not a folder")


def set_aside(path: str, whole_lines: bool = False) -> str | None:
    """Rename an earlier run's manifest at ``path`` to ``NAME.STAMP.EXT``; return its new path.

    ``whole_lines``: cut a half line off its end first (a killed run's ``.part``).
    Never raises: None when there is nothing to keep, or it cannot be moved (then the
    caller must not replace it).
    """
    try:
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            return None
        if whole_lines:
            _cut_to_whole_lines(path)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(os.path.getmtime(path)))
    except OSError:
        return None
    final = path.removesuffix(PART_SUFFIX)
    stem, ext = os.path.splitext(final)
    for number in range(1, 1000):
        target = f"{stem}.{stamp}{ext}" if number == 1 else f"{stem}.{stamp}-{number}{ext}"
        try:
            os.link(path, target)  # never over an existing file, unlike rename
        except FileExistsError:
            continue
        except OSError:
            return None
        try:
            os.unlink(path)
        except OSError:
            pass
        return target
    return None


def _cut_to_whole_lines(path: str) -> None:
    with open(path, "rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 65536))
        tail = handle.read()
        end = tail.rfind(b"\n")
        if end < 0 and size > 65536:
            return  # a last line longer than that: leave the file as it is
        handle.truncate(size - len(tail) + end + 1)


class ManifestWriter:
    """Appends records to ``PATH.part``; ``close`` gives it the final name.

    Raises (from the constructor):
        ConfigError: the file cannot be created (a read-only folder, no permission).
    """

    def __init__(self, path: str) -> None:
        check_manifest_path(path)
        self.path = path
        self.part = path + PART_SUFFIX
        self.kept: list[str] = []  # earlier manifests renamed aside (set_aside)
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            killed = set_aside(self.part, whole_lines=True)  # a killed run's records, kept
            if killed is not None:
                self.kept.append(killed)
            self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise ConfigError(f"cannot write the manifest {path!r}: {exc.strerror or exc}") from None
        self._lines: list[str] = []
        self._buffered = 0
        self._whole = 0  # bytes of the file that are whole lines, written and accepted
        self.broken: str | None = None  # why writing stopped, once it did

    def write(self, record: dict[str, Any]) -> None:
        """Add one record (buffered).

        Raises:
            StorageError: the disk refused the write; the file keeps its whole lines.
        """
        line = _ENCODER.encode(record) + "\n"
        self._lines.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._lines or self.broken is not None:
            return
        data = "".join(self._lines).encode("utf-8")
        self._lines.clear()
        self._buffered = 0
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self.broken = f"cannot write the manifest {self.path!r}: {exc.strerror or exc}"
            self._cut_back()
            raise StorageError(self.broken) from None
        self._whole += len(data)

    def close(self, durable: bool = False) -> str | None:
        """Write what is buffered, then rename to the final name; None, or why it could not.

        With ``durable`` (``--durability`` batch or full), the data reaches the disk
        before the name, and the name (the folder) before the journal's last commit.
        Never raises: the run is ending, and the summary says what happened.
        """
        if self._fd < 0:
            return self.broken
        try:
            self.flush()
        except StorageError:
            pass
        lost = self.broken
        if durable:
            try:
                os.fsync(self._fd)
            except OSError as exc:  # still renamed: whole lines, only maybe not on the disk yet
                lost = (f"{lost}; " if lost else "") + f"cannot flush the manifest {self.path!r}: " \
                    f"{exc.strerror or exc}"
        try:
            os.close(self._fd)
            self._fd = -1
            earlier = set_aside(self.path)
            if earlier is not None:
                self.kept.append(earlier)
            elif os.path.isfile(self.path) and os.path.getsize(self.path) > 0:
                raise OSError(f"the earlier manifest {self.path!r} could not be renamed aside")
            os.replace(self.part, self.path)
            if durable:
                _fsync_folder(os.path.dirname(self.path) or ".")
        except OSError as exc:
            return (f"{lost}; " if lost else "") + (
                f"the manifest's records so far stay in {self.part!r} ({exc.strerror or exc})")
        if lost:
            return f"{lost}; {self.path!r} holds the records written before that"
        return None

    def _cut_back(self) -> None:
        """After a failed write, drop what it left of its lines (a half line at the end)."""
        try:
            os.ftruncate(self._fd, self._whole)
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # bounded: each round writes at least one byte, or raises
        written = os.write(fd, view)
        view = view[written:]


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
