"""Names from URLs, templates and headers are safe, deterministic and distinct."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from fetcher.errors import ConfigError
from fetcher.files.filenames import clean_component, disposition_filename, extension_for_type
from fetcher.models import FetchTask
from fetcher.download import partial
from fetcher.files import paths
from fetcher.files.naming import finalize_name, initial_name, name_for_url, parse_naming, safe_component, url_digest
from fetcher.files.paths import FOUND, NO_FILE, NO_FOLDER, join_within, locate


@pytest.mark.parametrize("url", [
    "http://h/../../etc/passwd",
    "http://h/a/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "http://h/%2e%2e%2f%2e%2e%2fescape.jpg",
    "http://h/..%5c..%5cwin.ini",
    "http://h//etc/passwd",
    "http://h/%00nul.jpg",
    "http://h/..",
    "http://h/",
    "http://h",
    "http://h/CON",
    "http://h/aux.jpg",
    "http://h/" + "a" * 5000 + ".jpg",
    "http://h/\u00e9t\u00e9.png",
])
def test_names_stay_inside_the_output_folder(tmp_path, url):
    name = name_for_url(url)
    target = join_within(str(tmp_path), name)
    assert os.path.commonpath([str(tmp_path), target]) == str(tmp_path)
    host, filename = name.split("/")
    assert host == "h"
    assert filename and not filename.startswith(".")
    assert ".." not in name and "\\" not in name and "\x00" not in name
    assert len(filename.encode()) <= 255
    assert filename.split(".")[0].lower() not in {"con", "aux", "nul"}


def test_names_are_deterministic_and_keep_the_extension():
    url = "https://Example.com:8443/gallery/Cat%20Photo.JPG?size=large"
    assert name_for_url(url) == name_for_url(url)
    host, filename = name_for_url(url).split("/")
    assert host == "example.com_8443"
    assert filename.startswith("Cat_Photo-") and filename.endswith(".jpg")


def test_urls_with_the_same_basename_get_distinct_names():
    urls = ["http://h/a/image.jpg", "http://h/b/image.jpg", "http://h/image.jpg?v=2", "http://h/image.jpg"]
    names = {name_for_url(u) for u in urls}
    assert len(names) == len(urls)


@pytest.mark.parametrize("relative", ["../x", "/etc/passwd", "a/../../x", "", ".", "a\x00b"])
def test_join_within_refuses_escapes(tmp_path, relative):
    with pytest.raises(ValueError):
        join_within(str(tmp_path), relative)


def test_safe_component_keeps_plain_names():
    assert safe_component("photo_01.jpg") == "photo_01.jpg"
    assert safe_component("../..") == ""


# --- --naming: modes, templates, names completed from response headers --------------------

@pytest.mark.parametrize("spec,message", [
    ("hsah", "unknown naming 'hsah'"),
    ("{host}/{name}.{ext}", "must contain {hash} or {sha1}"),
    ("{index:06d}.{ext}", "must contain {hash} or {sha1}"),
    ("{sha1:.2}/{name}.{ext}", "must contain {hash} or {sha1}"),
    ("{host}/{nope}-{hash}", "unknown field {nope}"),
    ("{}-{hash}", "unknown field {}"),
    ("{host.upper}-{hash}", "unknown field {host.upper}"),
    ("{index:{hash}}-{hash}", "unknown field {index}"),
    ("{hash", "malformed"),
    ("{hash}}", "malformed"),
    ("{hash}-{index:q}", "cannot be rendered"),
])
def test_bad_naming_is_a_config_error(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_naming(spec)


def test_url_mode_is_the_default_scheme():
    assert initial_name("http://h/a/b.jpg", 3, "url") == (name_for_url("http://h/a/b.jpg"), False)


def test_hash_mode_is_the_full_sha1_plus_the_extension():
    name, provisional = initial_name("http://h/a/b.JPG", 0, "hash")
    assert name == hashlib.sha1(b"http://h/a/b.JPG").hexdigest() + ".jpg" and not provisional


def test_template_fields():
    url = "http://Ex.com:8080/gal/2024/Cat%20Photo.png?x=1"
    name, provisional = initial_name(url, 7, "{host}/{path}/{name}_{index:04d}-{hash}.{ext}|{sha1}")
    host, gal, year, stem, last = name.split("/")
    assert (host, gal, year, stem) == ("ex.com_8080", "gal", "2024", "Cat_Photo")
    assert last.startswith("Cat_Photo_0007-") and not provisional
    assert last.endswith(".png_" + hashlib.sha1(url.encode()).hexdigest())


@pytest.mark.parametrize("spec", [
    "../../{hash}", "/{host}/{hash}", "{path}/../../{hash}.{ext}", "C:\\{hash}", "..\\..\\{hash}",
    "{host}/./{hash}/..", "con/{hash}", "{path}{path}{path}{path}-{hash}",
])
def test_templates_never_escape(tmp_path, spec):
    url = "http://h/" + "/".join([".."] * 5 + ["%2e%2e", "a" * 300]) + ".jpg"
    name, _ = initial_name(url, 0, spec)
    target = join_within(str(tmp_path), name)
    assert target.startswith(str(tmp_path) + os.sep)
    parts = name.split("/")
    assert all(part and part not in {".", ".."} and len(part) <= 200 for part in parts)
    assert "\\" not in name and not name.startswith("/") and not name.lower().startswith("con/")


def test_template_names_stay_distinct_when_cut_short():
    urls = [f"http://h/{'x' * 400}{n}.jpg" for n in range(3)]
    names = {initial_name(u, 0, "{name}{name}-{hash}.{ext}")[0] for u in urls}
    assert len(names) == 3 and all(len(n) <= 200 for n in names)


def test_a_url_without_extension_is_completed_from_content_type():
    url = "http://h/photos/123"
    name, provisional = initial_name(url, 0, "url")
    assert provisional and name == name_for_url(url, ext="")
    task = FetchTask(url=url, name=name, provisional_name=True)
    assert finalize_name(task, "image/jpeg; charset=binary", None, "url") == name + ".jpg"
    assert finalize_name(task, "application/octet-stream", None, "url") == name
    assert finalize_name(task, None, None, "url") == name


def test_script_extensions_defer_to_content_type():
    url = "http://h/show.php?id=3"
    name, provisional = initial_name(url, 0, "url")
    task = FetchTask(url=url, name=name, provisional_name=provisional)
    assert provisional
    assert finalize_name(task, "image/png", None, "url").endswith(".png")
    assert finalize_name(task, None, None, "url").endswith(".php")


def test_a_final_name_is_never_changed_by_headers():
    task = FetchTask(url="http://h/a.jpg", name="mine/a.jpg")
    assert finalize_name(task, "text/html", 'attachment; filename="evil.exe"', "content-disposition") == \
        "mine/a.jpg"


def test_template_without_ext_is_never_provisional():
    name, provisional = initial_name("http://h/page", 0, "{host}/{hash}")
    assert not provisional and name == "h/" + name.split("/")[1]


@pytest.mark.parametrize("header,expected", [
    ('attachment; filename="../../etc/passwd"', "passwd"),
    ('attachment; filename="C:\\\\Windows\\\\evil.dll"', "evil.dll"),
    ("attachment; filename=/abs/root.txt", "root.txt"),
    ("attachment; filename*=UTF-8''..%2F..%2Fescape.txt", "escape.txt"),
    ("attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf; filename=\"rates.pdf\"", "€ rates.pdf"),
    ("attachment; filename=\"rates.pdf\"; filename*=utf-8''%E2%82%AC.pdf", "€.pdf"),
    ("attachment; filename=\"\u00c3\u00a9t\u00c3\u00a9.pdf\"", "été.pdf"),  # raw UTF-8 read as latin-1
    ('attachment; filename="a\\"b.txt"', "a_b.txt"),
    ('attachment; filename="nul.txt"', "_nul.txt"),
    ('attachment; filename="\u202egpj.exe"', "_gpj.exe"),
    ('attachment; filename=".."', None),
    ('attachment; filename="..."', None),
    ("attachment", None),
    ("", None),
    (None, None),
])
def test_content_disposition_names_are_reduced_to_a_safe_base_name(header, expected):
    assert disposition_filename(header) == expected


def test_content_disposition_mode_keeps_the_hash():
    url = "http://h/download?id=1"
    name, provisional = initial_name(url, 0, "content-disposition")
    task = FetchTask(url=url, name=name, provisional_name=provisional)
    final = finalize_name(task, "application/pdf", 'attachment; filename="../Report.PDF"', "content-disposition")
    assert final == f"h/Report-{url_digest(url)}.pdf"
    assert finalize_name(task, "application/pdf", None, "content-disposition") == name_for_url(url, ext="pdf")


@pytest.mark.parametrize("content_type,ext", [
    ("image/jpeg", "jpg"), ("IMAGE/PNG", "png"), ("image/svg+xml; charset=utf-8", "svg"),
    ("text/html; charset=utf-8", "html"), ("application/octet-stream", ""), ("", ""), (None, ""),
    ("video/quicktime", "mov"), ("application/x-made-up", ""), ("image/webp", "webp"),
])
def test_extension_for_content_type(content_type, ext):
    assert extension_for_type(content_type) == ext


def test_clean_component_limits_bytes_and_keeps_the_extension():
    long = "é" * 300 + ".jpeg"
    cleaned = clean_component(long)
    assert len(cleaned.encode()) <= 200 and cleaned.endswith(".jpeg")


def test_a_symlink_planted_inside_cannot_lead_out(tmp_path):
    root = tmp_path / "out"
    outside = tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "evil.com").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        join_within(str(root), "evil.com/x.jpg")
    (root / "file.jpg").symlink_to(outside / "target.jpg")
    with pytest.raises(ValueError):
        join_within(str(root), "file.jpg")


def test_an_output_folder_that_is_itself_a_link_is_fine(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert join_within(str(tmp_path / "link"), "h/x.jpg") == str(tmp_path / "link" / "h" / "x.jpg")


# --- locate: what the safety walk learns, and the folders it remembers -------------------

def _counting_lstat(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = os.lstat

    def lstat(path, *args, **kwargs):
        seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    return seen


def test_locate_says_whether_the_target_and_its_folder_exist(tmp_path):
    root = str(tmp_path)
    assert locate(root, "h/x.jpg") == (str(tmp_path / "h" / "x.jpg"), NO_FOLDER)
    (tmp_path / "h").mkdir()
    assert locate(root, "h/x.jpg")[1] == NO_FILE
    (tmp_path / "h" / "x.jpg").write_bytes(b"x")
    assert locate(root, "h/x.jpg")[1] == FOUND
    assert locate(root, "top.jpg")[1] == NO_FILE


@pytest.mark.parametrize("relative", ["h/x.jpg", "h/./x.jpg", "h//x.jpg", "h/g/../x.jpg", "./h/x.jpg"])
def test_locate_gives_the_normal_path_whatever_the_spelling(tmp_path, relative):
    (tmp_path / "h").mkdir()
    for root in (str(tmp_path), str(tmp_path) + "/"):
        assert locate(root, relative) == (str(tmp_path / "h" / "x.jpg"), NO_FILE)


def test_a_remembered_folder_costs_one_lstat_per_file(tmp_path, monkeypatch):
    (tmp_path / "h").mkdir()
    seen = _counting_lstat(monkeypatch)
    join_within(str(tmp_path), "h/a.jpg")
    assert seen == [str(tmp_path / "h"), str(tmp_path / "h" / "a.jpg")]
    seen.clear()
    join_within(str(tmp_path), "h/b.jpg")
    assert seen == [str(tmp_path / "h" / "b.jpg")]  # the file itself is always looked at


def test_a_file_in_a_remembered_folder_is_still_checked_for_links(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "out"
    (root / "h").mkdir(parents=True)
    join_within(str(root), "h/a.jpg")  # h is remembered
    (root / "h" / "b.jpg").symlink_to(outside / "b.jpg")
    with pytest.raises(ValueError, match="symbolic link"):
        join_within(str(root), "h/b.jpg")


def test_a_missing_folder_is_not_remembered(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "out"
    root.mkdir()
    assert locate(str(root), "h/a.jpg")[1] == NO_FOLDER
    (root / "h").symlink_to(outside, target_is_directory=True)  # planted after the first look
    with pytest.raises(ValueError, match="symbolic link"):
        join_within(str(root), "h/a.jpg")


@pytest.mark.parametrize("writable", ["root", "middle"])
def test_folders_others_can_write_to_are_looked_at_for_every_file(tmp_path, writable):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "out"
    (root / "a" / "b").mkdir(parents=True)
    (root if writable == "root" else root / "a").chmod(0o777)  # anyone could swap what is inside
    join_within(str(root), "a/b/x.jpg")
    (root / "a" / "b").rmdir()
    (root / "a" / "b").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        join_within(str(root), "a/b/x.jpg")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_folder_owned_by_another_user_is_looked_at_for_every_file(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "out"
    (root / "h").mkdir(parents=True)
    os.chown(root, 12345, 12345)  # its owner could swap h for a link at any time
    join_within(str(root), "h/x.jpg")
    (root / "h").rmdir()
    (root / "h").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        join_within(str(root), "h/x.jpg")


def test_a_folder_removed_under_a_download_is_checked_again(tmp_path):
    import shutil

    root = tmp_path / "out"
    (root / "h").mkdir(parents=True)
    join_within(str(root), "h/a.jpg")
    assert paths._verified[str(root)]
    shutil.rmtree(root / "h")
    paths._made.add(str(root / "h"))  # as if this process had made it earlier
    partial.open_part(str(root / "h" / "a.jpg.part"), 0).close()  # recreates it ...
    assert not paths._verified.get(str(root))  # ... and forgets every remembered folder
