"""fetch_one in-process with ``responses``: outcomes, error kinds, atomic writes."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
import requests
import responses

from fetcher.download.attempt import fetch_one
from fetcher.download.headers import parse_retry_after
from fetcher.models import Status, FetchTask
from fetcher.files.naming import name_for_url
from fetcher.options import Options
from fetcher.transports.factory import make_session

URL = "http://example.test/pics/cat.jpg"


@pytest.fixture
def options(tmp_path) -> Options:
    return Options.create(out=str(tmp_path))


@pytest.fixture
def session():
    with make_session(Options.create()) as s:
        yield s


def task(url: str = URL) -> FetchTask:
    return FetchTask(url=url, name=name_for_url(url), attempt=2, index=7)


def files_under(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@responses.activate
def test_ok_writes_the_file_atomically_with_its_hash(options, session):
    body = os.urandom(200_000)
    responses.get(URL, body=body, content_type="image/jpeg")
    result = fetch_one(task(), session, options)
    assert result.status is Status.OK and result.error is None
    assert result.bytes == len(body)
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert result.http_status == 200 and result.content_type == "image/jpeg"
    assert result.attempts == 2 and result.index == 7 and result.final_url == URL
    with open(os.path.join(options.output.out, result.path), "rb") as handle:
        assert handle.read() == body
    assert files_under(options.output.out) == [result.path]


@responses.activate
@pytest.mark.parametrize("status,retryable", [(404, False), (403, False), (410, False),
                                              (429, True), (500, True), (503, True), (504, True)])
def test_http_errors_are_values_with_the_right_retry_hint(options, session, status, retryable):
    responses.get(URL, status=status, headers={"Retry-After": "7"})
    result = fetch_one(task(), session, options)
    assert result.status is Status.FAILED
    assert result.error is not None and result.error.kind == "http-status"
    assert result.http_status == status
    assert result.retryable is retryable
    assert result.retry_after == 7.0
    assert files_under(options.output.out) == []


@responses.activate
@pytest.mark.parametrize("exc,kind,retryable", [
    (requests.ConnectionError("refused"), "connect", True),
    (requests.ConnectTimeout("slow connect"), "timeout", True),
    (requests.ReadTimeout("slow read"), "timeout", True),
    (requests.exceptions.ChunkedEncodingError("cut"), "truncated", True),
    (requests.exceptions.SSLError("bad cert"), "connect", False),
    (requests.TooManyRedirects("loop"), "redirect", False),
    (requests.exceptions.InvalidSchema("No connection adapters for 'ftp://x'"), "redirect", False),
])
def test_transport_errors_are_translated(options, session, exc, kind, retryable):
    responses.get(URL, body=exc)
    result = fetch_one(task(), session, options)
    assert result.status is Status.FAILED
    assert result.error is not None and result.error.kind == kind
    assert result.retryable is retryable
    assert files_under(options.output.out) == []


@responses.activate
def test_cancel_removes_the_partial_file(options, session):
    responses.get(URL, body=b"x" * 10_000)
    cancel = threading.Event()
    cancel.set()
    result = fetch_one(task(), session, options, cancel=cancel)
    assert result.error is not None and result.error.kind == "cancelled"
    assert files_under(options.output.out) == []


@responses.activate
def test_a_disk_error_is_an_io_failure(options, session, tmp_path):
    responses.get(URL, body=b"data")
    blocked = FetchTask(url=URL, name="file-not-dir/x.jpg")
    (tmp_path / "file-not-dir").write_text("I am a file, not a folder")
    result = fetch_one(blocked, session, options)
    assert result.error is not None and result.error.kind == "io"


def test_a_name_that_escapes_is_refused_before_any_request(options, session):
    result = fetch_one(FetchTask(url=URL, name="../escape.jpg"), session, options)
    assert result.error is not None and result.error.kind == "invalid-url"


def test_retry_after_parsing():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    future = parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT")
    assert future is not None and future > 1e9


@responses.activate
def test_input_columns_are_carried_into_ok_and_failed_results(options, session):
    responses.get(URL, body=b"x")
    responses.get(URL + "?missing", status=404)
    meta = {"title": "Cat", "status": "mine", "path": "theirs"}
    ok = fetch_one(FetchTask(url=URL, name="x.jpg", meta=meta), session, options)
    bad = fetch_one(FetchTask(url=URL + "?missing", name="y.jpg", meta=meta), session, options)
    for result in (ok, bad):
        record = result.to_record()
        assert record["input"] == meta
        assert record["status"] == result.status.value  # never clobbered by a column called status
    assert ok.to_record()["path"] == "x.jpg"


@responses.activate
@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_expected_checksum_ok(options, session, algorithm):
    body = os.urandom(100_000)
    responses.get(URL, body=body)
    expected = hashlib.new(algorithm, body).hexdigest()
    result = fetch_one(FetchTask(url=URL, name="x.jpg", checksum=f"{algorithm}:{expected}"), session, options)
    assert result.status is Status.OK and result.sha256 == hashlib.sha256(body).hexdigest()


@responses.activate
@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_checksum_mismatch_is_bad_content_and_leaves_nothing(options, session, algorithm):
    responses.get(URL, body=b"not what was promised")
    wrong = "0" * (64 if algorithm == "sha256" else 32)
    result = fetch_one(FetchTask(url=URL, name="x.jpg", checksum=f"{algorithm}:{wrong}"), session, options)
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind == "bad-content" and f"{algorithm} mismatch" in result.error.message
    assert result.retryable is False and result.path is None
    assert files_under(options.output.out) == []


@responses.activate
def test_provisional_name_is_completed_from_the_headers(options, session):
    url = "http://example.test/photo/42"
    responses.get(url, body=b"jpeg bytes", content_type="image/jpeg")
    provisional = name_for_url(url, ext="")
    result = fetch_one(FetchTask(url=url, name=provisional, provisional_name=True), session, options)
    assert result.path == provisional + ".jpg"
    assert files_under(options.output.out) == [provisional + ".jpg"]



def test_our_session_keeps_requests_cookie_and_credential_handling(server, options, session):
    """The prepared-request path (transports/requests.py) sends what Session.get would:
    credentials in the URL as Basic auth, a cookie set by a redirect along the chain, and
    that cookie again on the session's later requests."""
    import json

    memory = Options.create(out=options.output.out, in_memory=True)

    def echoed(url: str) -> dict[str, str]:
        result = fetch_one(task(url), session, memory)
        assert result.status is Status.OK, result.error
        return json.loads(result.content)

    host = server.url("/").split("//")[1].rstrip("/")
    with_credentials = echoed(f"http://u:p%40ss@{host}/redirect/x?to=/echo&cookie=first%3D1")
    assert with_credentials["Authorization"] == "Basic dTpwQHNz"  # u:p@ss
    assert with_credentials["Cookie"] == "first=1"
    assert echoed(server.url("/redirect/y?to=/echo&cookie=second%3D2"))["Cookie"] == "second=2"
    later = echoed(server.url("/echo"))
    assert later["Cookie"] == "second=2" and "Authorization" not in later
