"""Property-based tests of what fetcher reads from a server or a user's files: URLs and their canonical
form, response headers (Content-Disposition, Content-Type, Content-Range, Retry-After, Location,
X-Robots-Tag, Content-Encoding), naming templates, and cookie, netrc and header files.

The promise at each boundary: any text (a header is ISO-8859-1, so any byte) ends as a value, a
FetchFailure, an InvalidURL or a ConfigError (one line), never another exception; a name made from
it stays inside the output folder. Profiles: tests/props.py."""

from __future__ import annotations

import math
import os
import tempfile

import props  # noqa: F401 - loads the hypothesis profile
from hypothesis import given
from hypothesis import strategies as st

from fetcher.download.guards import check_complete, check_content_type, check_encoding, check_magic
from fetcher.download.headers import expected_size, parse_retry_after, resume_offset
from fetcher.download.optout import opted_out
from fetcher.errors import ConfigError, FetchFailure
from fetcher.files.filenames import disposition_filename, extension_for_type
from fetcher.files.naming import finalize_name, initial_name, parse_naming
from fetcher.files.paths import join_within
from fetcher.models import FetchTask
from fetcher.sources.tasks import InvalidURL, canonical_url
from fetcher.transports.base import loop_message, refused_redirect

LATIN1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=200)  # a header: any byte
HEADERISH = st.one_of(LATIN1, st.text(max_size=200), st.sampled_from([
    "attachment; filename*=UTF-8''%E2%82%AC%20rates.txt", 'inline; filename="../../etc/passwd"',
    "attachment; filename=\"\\\\server\\share\\x.exe\"", "bytes 0-10/*", "bytes */100", "bytes 5-4/3",
    "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "²", "١٢٣", "1e400", "nan", "-1",
    "googlebot: noai, noimageai", "fetcher: noai", "image/jpeg; charset=\xff", "gzip, br", " x-gzip "]))
URLS = st.one_of(
    st.text(max_size=120),
    st.builds(lambda scheme, host, rest: f"{scheme}://{host}{rest}", st.sampled_from(["http", "HTTPS", "ftp", "h"]),
              st.text(max_size=30), st.text(max_size=60)),
    st.from_regex(r"https?://[a-z0-9.\-\[\]:@%]{1,40}(/[^\s]{0,40})?", fullmatch=True),
)


def headers_of(**values: str) -> dict[str, str]:
    return {name.replace("_", "-").title(): value for name, value in values.items()}


# -- URLs ------------------------------------------------------------------------------------------


@given(URLS)
def test_canonical_url_is_a_url_or_a_reason_and_is_stable(text):
    try:
        url = canonical_url(text)
    except InvalidURL as exc:
        assert exc.args and str(exc)
        return
    assert url.startswith(("http://", "https://"))
    assert canonical_url(url) == url  # canonical twice is canonical once


@given(URLS, st.integers(min_value=0, max_value=10**6),
       st.sampled_from(["url", "hash", "content-disposition", "{host}/{hash}.{ext}", "{path}-{sha1}", "{index}_{hash}"]))
def test_a_name_from_any_url_stays_in_the_folder(text, index, naming):
    try:
        url = canonical_url(text)
    except InvalidURL:
        return
    name, _provisional = initial_name(url, index, naming)
    assert name and not os.path.isabs(name) and ".." not in name.split("/")
    join_within("/out", name)  # raises ValueError if it escapes


# -- response headers ------------------------------------------------------------------------------


@given(HEADERISH)
def test_retry_after_of_any_text_is_a_finite_delay_or_none(value):
    delay = parse_retry_after(value)
    assert delay is None or (math.isfinite(delay) and delay >= 0)


@given(HEADERISH, st.one_of(st.none(), st.tuples(st.integers(min_value=0, max_value=10**12), st.text(max_size=10))))
def test_content_range_of_any_text_is_an_offset_or_a_failure(value, resume):
    try:
        offset = resume_offset(206, headers_of(content_range=value), resume)
    except FetchFailure as failure:
        assert failure.kind == "bad-content"
        return
    assert resume is not None and offset == resume[0]


@given(HEADERISH, st.integers(min_value=0, max_value=10**7), st.booleans())
def test_content_length_of_any_text(value, received, encoded):
    headers = headers_of(content_length=value, **({"content_encoding": "gzip"} if encoded else {}))
    assert isinstance(expected_size(headers, -1), int)
    try:
        check_complete(headers, 200, received)
    except FetchFailure as failure:
        assert failure.kind == "truncated"


@given(HEADERISH, st.lists(st.sampled_from(["image/*", "image/jpeg", "application/pdf", "text/html"]), max_size=3),
       st.binary(max_size=40))
def test_content_type_of_any_text(value, accept, head):
    try:
        check_content_type(value, tuple(accept))
        check_magic(value, head)
    except FetchFailure as failure:
        assert failure.kind == "bad-content"
    ext = extension_for_type(value)
    assert ext == "" or ("/" not in ext and ".." not in ext)


@given(HEADERISH)
def test_content_encoding_of_any_text(value):
    try:
        check_encoding(headers_of(content_encoding=value))
    except FetchFailure as failure:
        assert failure.kind == "bad-content" and "\n" not in failure.message


@given(HEADERISH, st.sampled_from(["content-disposition", "url", "{host}/{name}-{hash}.{ext}"]),
       st.sampled_from(["http://h/a", "http://h/", "http://h/x.php?y=1"]))
def test_content_disposition_of_any_text_gives_a_name_in_the_folder(value, naming, url):
    offered = disposition_filename(value)
    assert offered is None or ("/" not in offered and "\\" not in offered and offered not in (".", ".."))
    task = FetchTask(url=url, name="x", index=3, provisional_name=True)
    name = finalize_name(task, value, value, naming)
    assert name and not os.path.isabs(name)
    join_within("/out", name)


@given(HEADERISH, st.sampled_from(["fetcher/1.0", "Mozilla/5.0", "googlebot"]))
def test_x_robots_tag_of_any_text(value, agent):
    directive = opted_out(headers_of(x_robots_tag=value), agent)
    assert directive is None or directive in ("noai", "noimageai")


@given(st.lists(URLS, min_size=1, max_size=6), HEADERISH)
def test_location_chains_and_refused_redirects_of_any_text(chain, message):
    text = loop_message(chain)
    assert text is None or text.startswith("redirect loop: ")
    failure = refused_redirect(message)
    assert failure.kind == "redirect" and failure.message.startswith("redirected to an unsupported URL (")


# -- naming templates -----------------------------------------------------------------------------


@given(st.text(max_size=60), URLS, st.integers(min_value=0, max_value=10**9))
def test_any_naming_template_is_refused_or_names_inside_the_folder(spec, text, index):
    try:
        parse_naming(spec)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    try:
        url = canonical_url(text)
    except InvalidURL:
        url = "http://example.com/a/b.jpg"
    name, _ = initial_name(url, index, spec)
    assert name and not os.path.isabs(name)
    join_within("/out", name)


@given(st.lists(st.sampled_from(["{host}", "{name}", "{hash}", "{sha1}", "{ext}", "{index}", "{path}", "/", "-", ".",
                                 "..", "{index:08d}", "{name:.3}", "x", "{", "}", "{{", "}}"]), max_size=8))
def test_templates_made_of_real_fields(parts):
    test_any_naming_template_is_refused_or_names_inside_the_folder.hypothesis.inner_test(  # type: ignore[attr-defined]
        "".join(parts), "http://h.example/a/b c/d.jpg?q=1", 42)


# -- cookie, netrc and header files -------------------------------------------------------------


def _file(data: bytes) -> str:
    handle = tempfile.NamedTemporaryFile(delete=False)
    handle.write(data)
    handle.close()
    return handle.name


@given(st.binary(max_size=600))
def test_a_cookies_file_of_any_bytes_is_read_or_refused_in_one_line(data):
    from fetcher.transports.factory import _load_cookies

    path = _file(b"# Netscape HTTP Cookie File\n" + data)
    try:
        _load_cookies(path)
    except ConfigError as exc:
        assert "\n" not in str(exc).strip()
    finally:
        os.unlink(path)


@given(st.binary(max_size=600))
def test_a_header_file_of_any_bytes_is_read_or_refused_in_one_line(data):
    from fetcher.options.values import expand_headers, parse_header

    path = _file(data)
    try:
        for header in expand_headers([f"@{path}"]):
            if isinstance(header, str):
                parse_header(header)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    finally:
        os.unlink(path)


@given(st.binary(max_size=600), st.sampled_from(["h", "example.com", "127.0.0.1"]))
def test_a_netrc_file_of_any_bytes_gives_credentials_or_none(data, host):
    from fetcher.transports.requests import _netrc_auth

    path = _file(data)
    old = os.environ.get("NETRC")
    os.environ["NETRC"] = path
    try:
        found = _netrc_auth.__wrapped__(host, path)  # what the requests transport asks (uncached)
        assert found is None or (isinstance(found[0], str) and isinstance(found[1], str))
    finally:
        if old is None:
            os.environ.pop("NETRC", None)
        else:
            os.environ["NETRC"] = old
        os.unlink(path)


@given(st.text(max_size=80))
def test_a_header_flag_of_any_text(text):
    from fetcher.options.values import parse_header

    try:
        name, value = parse_header(text)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert name and "\n" not in value and "\r" not in value


# -- crashes the properties found, each pinned by hand ---------------------------------------------


def test_found_a_cookies_file_that_is_not_utf8_or_has_a_nul_is_one_line():
    """UnicodeDecodeError and ValueError escaped MozillaCookieJar.load (only LoadError was caught)."""
    for data in (b"\x80", b"\xc2", b"\x00", b"h\tTRUE\t/\n"):
        path = _file(b"# Netscape HTTP Cookie File\n" + data)
        try:
            test_a_cookies_file_of_any_bytes_is_read_or_refused_in_one_line.hypothesis.inner_test(data)
            from fetcher.transports.factory import _load_cookies

            try:
                _load_cookies(path)
            except ConfigError:
                pass
        finally:
            os.unlink(path)


def test_found_a_netrc_that_is_not_utf8_gives_no_credentials():
    """requests' get_netrc_auth raised UnicodeDecodeError: every URL failed as invalid-url."""
    from fetcher.transports.requests import _netrc_auth

    path = _file(b"machine h login \x80 password x\n")
    try:
        assert _netrc_auth.__wrapped__("h", path) is None or True
        old = os.environ.get("NETRC")
        os.environ["NETRC"] = path
        try:
            assert _netrc_auth.__wrapped__("h", path) is None
        finally:
            os.environ.pop("NETRC", None) if old is None else os.environ.__setitem__("NETRC", old)
    finally:
        os.unlink(path)


def test_found_digits_that_int_refuses_in_headers():
    """'²'.isdigit() is true and int('²') raises: Retry-After, Content-Range and Content-Length raised."""
    assert parse_retry_after("²") is None and parse_retry_after("1²") is None
    try:
        resume_offset(206, {"Content-Range": "bytes ²-5/9"}, (0, "x"))
    except FetchFailure as failure:
        assert failure.kind == "bad-content"
    assert expected_size({"Content-Length": "²"}, -1) == -1
