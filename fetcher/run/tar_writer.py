"""A tar file written member by member, as ``tarfile`` writes it, for the shards' many small members.

``tarfile.TarFile.addfile`` cost about 0.1 ms of the coordinator's CPU per member (a
TarInfo copied, a PAX header considered, each field formatted by a Python loop), and a
webdataset sample is three members (issue 26). A sample's members have short ASCII names
(``KEY.jpg``, ``KEY.json``, ``KEY.txt``), so their header is a plain ustar one, built here
in one step: the bytes are the same as ``tarfile``'s with ``PAX_FORMAT`` (tested), which
is what any other name or size falls back to (``TarInfo.tobuf``).
"""

from __future__ import annotations

import shutil
import tarfile
from typing import IO

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 20 blocks: a tar file ends on a record, as tarfile's does
_MAX_SIZE = 8**11  # what 11 octal digits hold (8 GiB)
_MIDDLE = b"0000644\x000000000\x000000000\x00"  # mode, uid, gid
_TAIL = b"0" + bytes(100) + b"ustar\x0000" + bytes(32 + 32 + 8 + 8 + 155 + 12)  # type, link, magic, ... pad


def header(name: str, size: int, mtime: int) -> bytes:
    """The 512-byte header of a regular file of ``size`` bytes, mode 0644, owned by 0:0."""
    encoded = name.encode("ascii", "replace")
    if len(encoded) > 100 or not name.isascii() or size >= _MAX_SIZE or not 0 <= mtime < _MAX_SIZE:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, 0o644
        return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
    head = b"%s%s%011o\x00%011o\x00        %s" % (encoded.ljust(100, b"\x00"), _MIDDLE, size, mtime, _TAIL)
    return b"%s%06o\x00 %s" % (head[:148], sum(head), head[156:])


class TarWriter:
    """``path`` opened for writing as a tar file; ``close`` ends it (two zero blocks, a whole record)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close(), which every caller reaches
        self._offset = 0

    def add(self, name: str, data: bytes, mtime: int) -> None:
        """A member holding ``data``."""
        self._write(header(name, len(data), mtime))
        self._write(data)
        self._pad()

    def add_file(self, name: str, handle: IO[bytes], size: int, mtime: int) -> None:
        """A member holding the ``size`` bytes read from ``handle`` (which must have them)."""
        self._write(header(name, size, mtime))
        before = self._offset
        shutil.copyfileobj(handle, self._file)
        self._offset = self._file.tell()
        if self._offset - before != size:
            raise OSError(f"tar member {name}: {self._offset - before} bytes read, {size} expected")
        self._pad()

    def close(self) -> None:
        """Write the end of the archive and close the file (closed even if writing fails)."""
        try:
            end = self._offset + 2 * BLOCK
            self._write(bytes(2 * BLOCK + (-end) % RECORD))
        finally:
            self._file.close()

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._offset += len(data)

    def _pad(self) -> None:
        if self._offset % BLOCK:
            self._write(bytes(BLOCK - self._offset % BLOCK))
