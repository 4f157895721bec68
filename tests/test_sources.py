"""Input lines: validation, canonical form, duplicates, laziness."""

from __future__ import annotations

import itertools

import pytest

from fetcher.models import FetchTask, Result, Status
from fetcher.sources.readers import text_rows
from fetcher.sources.tasks import InvalidURL, canonical_url, iter_rows


def iter_inputs(lines, counts=None):
    """Numbered raw lines of a plain list, through the txt reader's rows and ``iter_rows``."""
    return iter_rows(text_rows(iter(lines)), counts)


def numbered(lines: list[bytes]):
    return list(enumerate(lines, start=1))


def test_comments_blank_lines_and_duplicates_are_skipped():
    counts: dict[str, int] = {}
    items = list(iter_inputs(numbered([
        b"# a comment\n", b"\n", b"   \n", b"http://h/a.jpg\n", b"  http://h/a.jpg  \n",
        b"HTTP://H:80/a.jpg#frag\n", b"http://h/b.jpg\r\n",
    ]), counts))
    assert [i.url for i in items] == ["http://h/a.jpg", "http://h/b.jpg"]
    assert all(isinstance(i, FetchTask) for i in items)
    assert [i.index for i in items] == [0, 1]
    assert counts["duplicates"] == 2


@pytest.mark.parametrize("line,kind", [
    (b"file:///etc/passwd", "unsupported-scheme"),
    (b"ftp://example.com/x.jpg", "unsupported-scheme"),
    (b"javascript:alert(1)", "unsupported-scheme"),
    (b"data:image/png;base64,AAAA", "unsupported-scheme"),
    (b"not a url at all", "invalid-url"),
    (b"example.com/x.jpg", "invalid-url"),
    (b"http://", "invalid-url"),
    (b"http:///path-only", "invalid-url"),
    (b"http://h:99999/x", "invalid-url"),
    (b"http://h/\xff\xfe.jpg", "invalid-url"),
    (b"http://exa mple.com/x", "invalid-url"),
])
def test_bad_lines_become_failed_results_and_the_rest_still_runs(line, kind):
    items = list(iter_inputs(numbered([line, b"http://h/ok.jpg"])))
    bad, good = items
    assert isinstance(bad, Result) and bad.status is Status.FAILED
    assert bad.error is not None and bad.error.kind == kind
    assert "line 1" in bad.error.message
    assert bad.attempts == 0
    assert isinstance(good, FetchTask) and good.url == "http://h/ok.jpg"


def test_canonical_form():
    assert canonical_url("HTTPS://Example.COM:443/A/b.jpg?q=1#x") == "https://example.com/A/b.jpg?q=1"
    assert canonical_url("http://example.com") == "http://example.com/"
    assert canonical_url("http://[::1]:8080/x") == "http://[::1]:8080/x"
    with pytest.raises(InvalidURL):
        canonical_url("gopher://x/")


def test_input_is_consumed_lazily():
    def endless():
        for n in itertools.count(1):
            yield n, f"http://h/{n}.jpg\n".encode()

    first_three = list(itertools.islice(iter_inputs(endless()), 3))
    assert [t.url for t in first_three] == ["http://h/1.jpg", "http://h/2.jpg", "http://h/3.jpg"]
