"""run/tar_writer.py writes the bytes tarfile writes (PAX format), for shard members and any other name."""

from __future__ import annotations

import io
import tarfile

import pytest

from fetcher.run.tar_writer import TarWriter

MEMBERS = [("000000001.jpg", b"x" * 1000), ("000000001.json", b'{"key": "000000001"}'), ("000000001.txt", b""),
           ("000000002.jpg", b"y" * 512), ("a" * 120 + ".jpg", b"long name: a PAX header"),
           ("ünïcode.txt", "ü".encode()), ("sub/dir/x.png", b"\x89PNG")]


def tarfile_bytes(members: list[tuple[str, bytes]], mtime: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("count", [0, 1, 3, len(MEMBERS)])
def test_the_same_bytes_as_tarfile(tmp_path, count):
    path = str(tmp_path / "t.tar")
    writer = TarWriter(path)
    for i, (name, data) in enumerate(MEMBERS[:count]):
        if i % 2:
            writer.add(name, data, 1_700_000_000)
        else:
            writer.add_file(name, io.BytesIO(data), len(data), 1_700_000_000)
    writer.close()
    with open(path, "rb") as handle:
        assert handle.read() == tarfile_bytes(MEMBERS[:count], 1_700_000_000)
    with tarfile.open(path) as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar] == MEMBERS[:count]


def test_a_file_shorter_than_its_size_is_an_error(tmp_path):
    writer = TarWriter(str(tmp_path / "t.tar"))
    with pytest.raises(OSError, match="3 bytes read, 5 expected"):
        writer.add_file("x.jpg", io.BytesIO(b"abc"), 5, 0)
    writer.close()
