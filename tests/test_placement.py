"""--on-exists: skip, overwrite, rename; the no-clobber final step."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os

import pytest
import responses

from fetcher.download import placement
from fetcher.download.attempt import fetch_one
from fetcher.models import Status, FetchTask
from fetcher.files.naming import initial_name
from fetcher.options import Options
from fetcher.transports.factory import make_session

URL = "http://example.test/pics/cat.jpg"
NEW = b"new body"
OLD = b"old body, longer"


@pytest.fixture
def session():
    with make_session(Options.create()) as s:
        yield s


def setup(tmp_path, on_exists: str, name: str = "h/cat.jpg") -> tuple[Options, str]:
    options = Options.create(out=str(tmp_path), on_exists=on_exists)
    existing = tmp_path / name
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_bytes(OLD)
    return options, str(existing)


def read(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@responses.activate
def test_skip_records_the_existing_file_without_a_request(tmp_path, session):
    options, existing = setup(tmp_path, "skip")
    result = fetch_one(FetchTask(url=URL, name="h/cat.jpg", meta={"k": "v"}), session, options)
    assert result.status is Status.SKIPPED and result.ok
    assert (result.path, result.bytes, result.attempts) == ("h/cat.jpg", len(OLD), 0)
    assert result.to_record()["input"] == {"k": "v"}
    assert read(existing) == OLD
    assert len(responses.calls) == 0


@responses.activate
def test_skip_checks_an_expected_checksum(tmp_path, session):
    options, existing = setup(tmp_path, "skip")
    good = "sha256:" + hashlib.sha256(OLD).hexdigest()
    kept = fetch_one(FetchTask(url=URL, name="h/cat.jpg", checksum=good), session, options)
    assert kept.status is Status.SKIPPED and kept.sha256 == good.split(":")[1]
    wrong = fetch_one(FetchTask(url=URL, name="h/cat.jpg", checksum="md5:" + "0" * 32), session, options)
    assert wrong.error is not None and wrong.error.kind == "bad-content"
    assert "does not match" in wrong.error.message and read(existing) == OLD
    assert len(responses.calls) == 0


def test_an_unreadable_existing_file_is_an_io_failure(tmp_path, session, monkeypatch):
    options, _ = setup(tmp_path, "skip")

    def refuse(path: str, checksum: str) -> bool:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(placement, "file_matches", refuse)
    result = fetch_one(FetchTask(url=URL, name="h/cat.jpg", checksum="md5:" + "0" * 32), session, options)
    assert result.error is not None and result.error.kind == "io"
    assert "Permission denied" in result.error.message


@responses.activate
def test_skip_with_a_name_from_the_headers_asks_first_then_drops(tmp_path, session):
    url = "http://example.test/photo/42"
    name, provisional = initial_name(url, 0, "url")
    assert provisional
    options, existing = setup(tmp_path, "skip", name + ".jpg")
    responses.get(url, body=NEW, content_type="image/jpeg")
    result = fetch_one(FetchTask(url=url, name=name, provisional_name=True), session, options)
    assert result.status is Status.SKIPPED and result.path == name + ".jpg" and result.attempts == 1
    assert read(existing) == OLD and len(responses.calls) == 1
    assert os.listdir(os.path.dirname(existing)) == [os.path.basename(existing)]  # no .part left


@responses.activate
def test_overwrite_replaces(tmp_path, session):
    options, existing = setup(tmp_path, "overwrite")
    responses.get(URL, body=NEW)
    result = fetch_one(FetchTask(url=URL, name="h/cat.jpg"), session, options)
    assert result.status is Status.OK and result.path == "h/cat.jpg" and read(existing) == NEW


@responses.activate
def test_rename_keeps_the_old_file_and_numbers_the_new_one(tmp_path, session):
    options, existing = setup(tmp_path, "rename")
    responses.get(URL, body=NEW)
    first = fetch_one(FetchTask(url=URL, name="h/cat.jpg"), session, options)
    second = fetch_one(FetchTask(url=URL, name="h/cat.jpg"), session, options)
    assert (first.path, second.path) == ("h/cat (1).jpg", "h/cat (2).jpg")
    assert read(existing) == OLD and read(tmp_path / "h" / "cat (1).jpg") == NEW
    assert sorted(os.listdir(tmp_path / "h")) == ["cat (1).jpg", "cat (2).jpg", "cat.jpg"]


def test_place_never_clobbers_a_name_that_appeared_meanwhile(tmp_path):
    (tmp_path / "taken.jpg").write_bytes(OLD)
    (tmp_path / "x.part").write_bytes(NEW)
    assert placement.place(str(tmp_path / "x.part"), str(tmp_path), "taken.jpg", "skip") is None
    assert read(tmp_path / "taken.jpg") == OLD and not (tmp_path / "x.part").exists()
    task = FetchTask(url=URL, name="taken.jpg")
    assert placement.taken_meanwhile(task, "taken.jpg", str(tmp_path)).status is Status.SKIPPED


def test_place_without_hard_links_falls_back(tmp_path, monkeypatch):
    def no_links(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(placement, "_renameat2", None)  # no renameat2 either: the last fallback
    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "taken.jpg").write_bytes(OLD)
    (tmp_path / "x.part").write_bytes(NEW)
    assert placement.place(str(tmp_path / "x.part"), str(tmp_path), "taken.jpg", "rename") == "taken (1).jpg"
    assert read(tmp_path / "taken (1).jpg") == NEW and read(tmp_path / "taken.jpg") == OLD


needs_renameat2 = pytest.mark.skipif(placement.renameat2() is None, reason="no renameat2 in this C library")


@needs_renameat2
def test_place_renames_in_one_call_where_renameat2_exists(tmp_path, monkeypatch):
    def no_links(src: str, dst: str) -> None:
        raise AssertionError("renameat2 should have placed the file")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "x.part").write_bytes(NEW)
    assert placement.place(str(tmp_path / "x.part"), str(tmp_path), "h/new.jpg", "skip") == "h/new.jpg"
    assert read(tmp_path / "h" / "new.jpg") == NEW and not (tmp_path / "x.part").exists()
    # A taken name is never clobbered by it: skip keeps the old file, rename numbers the new one.
    (tmp_path / "y.part").write_bytes(NEW)
    assert placement.place(str(tmp_path / "y.part"), str(tmp_path), "h/new.jpg", "rename") == "h/new (1).jpg"
    (tmp_path / "z.part").write_bytes(OLD)
    assert placement.place(str(tmp_path / "z.part"), str(tmp_path), "h/new.jpg", "skip") is None
    assert read(tmp_path / "h" / "new.jpg") == NEW and not (tmp_path / "z.part").exists()


def _refusing_renameat2(code: int, calls: list[int]):
    def renameat2(olddirfd: int, old: bytes, newdirfd: int, new: bytes, flags: int) -> int:
        calls.append(flags)
        ctypes.set_errno(code)
        return -1

    return renameat2


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS])
def test_place_falls_back_to_a_link_where_renameat2_is_refused(tmp_path, monkeypatch, code):
    calls: list[int] = []
    monkeypatch.setattr(placement, "_renameat2", _refusing_renameat2(code, calls))
    (tmp_path / "taken.jpg").write_bytes(OLD)
    for part in ("x.part", "y.part"):
        (tmp_path / part).write_bytes(NEW)
    assert placement.place(str(tmp_path / "x.part"), str(tmp_path), "taken.jpg", "skip") is None
    assert placement.place(str(tmp_path / "y.part"), str(tmp_path), "taken.jpg", "rename") == "taken (1).jpg"
    assert read(tmp_path / "taken.jpg") == OLD and read(tmp_path / "taken (1).jpg") == NEW
    assert not (tmp_path / "x.part").exists() and not (tmp_path / "y.part").exists()
    assert calls == [1] and placement._renameat2 is None  # asked once, then never again


def test_place_reports_a_real_rename_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(placement, "_renameat2", _refusing_renameat2(errno.EACCES, []))
    (tmp_path / "x.part").write_bytes(NEW)
    with pytest.raises(PermissionError):
        placement.place(str(tmp_path / "x.part"), str(tmp_path), "new.jpg", "skip")
    assert not (tmp_path / "x.part").exists() and not (tmp_path / "new.jpg").exists()


def test_copy_names():
    assert list(placement.copy_names("a/b.tar.gz"))[:3] == ["a/b.tar.gz", "a/b.tar (1).gz", "a/b.tar (2).gz"]
    assert list(placement.copy_names("noext"))[:2] == ["noext", "noext (1)"]


@pytest.mark.parametrize("value", ["keep", "", "SKIP"])
def test_bad_on_exists_is_a_config_error(value):
    from fetcher.errors import ConfigError

    with pytest.raises(ConfigError, match="on-exists must be one of"):
        Options.create(on_exists=value)


def test_options_default_to_skip():
    assert Options.create().output.on_exists == "skip"
