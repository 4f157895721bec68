"""partial.open_part and PartFile: the raw-descriptor sink a download writes its body into."""

from __future__ import annotations

import os

import pytest

from fetcher.download import partial


def _counting_writes(monkeypatch) -> list[int]:
    """Bytes per write(2) or writev(2) call."""
    writes: list[int] = []
    real_write, real_writev = os.write, os.writev
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))
    monkeypatch.setattr(os, "writev", lambda fd, buffers: writes.append(sum(map(len, buffers)))
                        or real_writev(fd, buffers))
    return writes


def test_a_small_body_is_one_write_at_close(tmp_path, monkeypatch):
    writes = _counting_writes(monkeypatch)
    part = str(tmp_path / "h" / "x.bin.part")  # its folder is made
    sink = partial.open_part(part, 0)
    for piece in (b"abc", b"def", b"g" * 1000):
        sink.write(piece)
    assert writes == [] and os.path.getsize(part) == 0
    sink.close()
    sink.close()  # a second close does nothing (settle closes again after _finish)
    assert writes == [1006]
    assert (tmp_path / "h" / "x.bin.part").read_bytes() == b"abcdef" + b"g" * 1000


def test_a_large_body_is_written_as_the_buffer_fills(tmp_path):
    part = str(tmp_path / "x.part")
    sink = partial.open_part(part, 0)
    chunk = bytes(range(256)) * 64  # 16 KiB
    for _ in range(20):
        sink.write(chunk)
    assert os.path.getsize(part) >= partial.WRITE_BUFFER  # flushed before close
    sink.close()
    assert (tmp_path / "x.part").read_bytes() == chunk * 20


def test_chunks_are_written_without_joining_them(tmp_path, monkeypatch):
    writes = _counting_writes(monkeypatch)
    part = str(tmp_path / "x.part")
    sink = partial.open_part(part, 0)
    chunks = [bytes([n]) * 50_000 for n in range(4)]  # 200 KB: flushed at 150 KB, then at close
    for chunk in chunks:
        sink.write(chunk)
    sink.close()
    assert writes == [150_000, 50_000]
    assert (tmp_path / "x.part").read_bytes() == b"".join(chunks)


def test_a_short_writev_is_continued(tmp_path, monkeypatch):
    real_writev = os.writev
    monkeypatch.setattr(os, "writev", lambda fd, buffers: real_writev(fd, [bytes(buffers[0][:5])]))
    part = str(tmp_path / "x.part")
    sink = partial.open_part(part, 0)
    for piece in (b"0123456789", b"abcdefghij", b"ABCDEFGHIJ"):
        sink.write(piece)
    sink.close()
    assert (tmp_path / "x.part").read_bytes() == b"0123456789abcdefghijABCDEFGHIJ"


def test_a_short_write_is_continued(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    part = str(tmp_path / "x.part")
    sink = partial.open_part(part, 0)
    sink.write(b"0123456789" * 5)
    sink.close()
    assert (tmp_path / "x.part").read_bytes() == b"0123456789" * 5


def test_a_write_that_makes_no_progress_fails_instead_of_looping(tmp_path, monkeypatch):
    real_write = os.write
    calls = iter([3])
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:next(calls, 0)])))
    sink = partial.open_part(str(tmp_path / "x.part"), 0)
    sink.write(b"abcdef")
    with pytest.raises(OSError):
        sink.close()


def test_open_part_resumes_at_the_offset_and_cuts_what_follows(tmp_path):
    part = tmp_path / "x.part"
    part.write_bytes(b"keep" + b"stale tail")
    sink = partial.open_part(str(part), 4)
    sink.write(b"+new")
    sink.close()
    assert part.read_bytes() == b"keep+new"


def test_open_part_starts_over_without_an_offset(tmp_path):
    part = tmp_path / "x.part"
    part.write_bytes(b"old bytes")
    sink = partial.open_part(str(part), 0)
    sink.close()
    assert part.read_bytes() == b""


def test_open_part_never_follows_a_link_planted_under_the_part_name(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "x.part").symlink_to(victim)
    with pytest.raises(OSError):
        partial.open_part(str(tmp_path / "x.part"), 0)
    assert victim.read_bytes() == b"precious"


# --- read_meta: no look-up where nothing of an earlier run or attempt can be ------------------

def _counting_access(monkeypatch) -> list[str]:
    seen: list[str] = []
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: seen.append(path) or real_access(path, mode))
    return seen


def test_a_folder_this_process_made_is_not_searched_for_meta_on_a_first_attempt(tmp_path, monkeypatch):
    part = str(tmp_path / "fresh" / "a.bin.part")
    partial.open_part(part, 0).close()  # makes the folder
    seen = _counting_access(monkeypatch)
    assert partial.read_meta(str(tmp_path / "fresh" / "b.bin.part"), "http://h/b") == (None, False)
    assert seen == []
    # A retry looks: its first attempt may have run in another process and left a meta.
    partial.read_meta(str(tmp_path / "fresh" / "b.bin.part"), "http://h/b", attempt=2)
    assert seen == [str(tmp_path / "fresh" / "b.bin.part.meta")]


def test_a_folder_that_was_there_before_is_searched_for_meta(tmp_path, monkeypatch):
    (tmp_path / "old").mkdir()
    part = str(tmp_path / "old" / "a.bin.part")
    with open(part, "wb") as handle:
        handle.write(b"x" * 10)
    with open(part + ".meta", "w") as handle:  # left by an earlier, killed run
        handle.write('{"url": "http://h/a", "validator": "\\"v1\\""}')
    partial.open_part(str(tmp_path / "old" / "b.bin.part"), 0).close()  # the folder is found, not made
    assert partial.read_meta(part, "http://h/a") == ((10, '"v1"'), True)


def test_a_meta_written_by_this_process_is_found_in_a_folder_it_made(tmp_path):
    part = str(tmp_path / "made" / "a.bin.part")
    sink = partial.open_part(part, 0)
    sink.write(b"y" * 20)
    sink.close()
    # A cancelled download keeps its part for the next run of the same (API) process.
    assert partial.remember(part, "http://h/a", {"ETag": '"v2"'})
    assert partial.read_meta(part, "http://h/a") == ((20, '"v2"'), True)
