"""Names from URLs are safe, deterministic and distinct."""

from __future__ import annotations

import os

import pytest

from fetcher.naming import join_within, name_for_url, safe_component


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
