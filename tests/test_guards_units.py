"""download/guards.py rule by rule, in process, with the clock given: each boundary on both sides.

The same rules are tested end to end on every pair (test_parity.py, test_hostile_servers.py); those
runs are in subprocesses, which mutation testing (tests/mutation.sh) cannot attribute to a line.
These can, so a rule broken by one operator fails here."""

from __future__ import annotations

import pytest

from fetcher.download.guards import (TransferGuard, check_complete, check_content_type, check_encoding,
                                     check_magic, is_encoded)
from fetcher.errors import FetchFailure


def guard(max_time: float = 0, min_speed: int = 0, min_speed_time: float = 10, max_size: int = 0,
          read_timeout: float = 30) -> TransferGuard:
    return TransferGuard(read_timeout, max_time, min_speed, min_speed_time, max_size, started=100.0)


def fails(call, *args, kind: str = "bad-content", word: str = "", retryable: bool | None = None) -> FetchFailure:
    with pytest.raises(FetchFailure) as caught:
        call(*args)
    failure = caught.value
    assert failure.kind == kind and word in failure.message, failure.message
    if retryable is not None:
        assert failure.retryable is retryable
    return failure


def test_max_time_fires_at_its_boundary_and_is_not_retried():
    g = guard(max_time=5)
    g.check(104.99)
    fails(g.check, 105.0, kind="timeout", word="--max-time 5 s", retryable=False)
    guard(max_time=0).check(10_000.0)  # 0: no deadline


def test_min_speed_judges_each_window_and_retries():
    g = guard(min_speed=100, min_speed_time=2)
    g._window_bytes = 150
    g.check(101.99)  # the window is not over yet
    fails(g.check, 102.0, kind="timeout", word="stalled: 75 B/s over 2 s is under --min-speed 100", retryable=True)
    g = guard(min_speed=100, min_speed_time=2)
    g._window_bytes = 200  # exactly the minimum: fast enough
    g.check(102.0)
    assert (g._window_start, g._window_bytes) == (102.0, 0)  # a new window starts
    g.check(103.0)


def test_timed_out_says_the_deadline_when_it_passed_else_the_silence(monkeypatch):
    import fetcher.download.guards as guards

    monkeypatch.setattr(guards.time, "monotonic", lambda: 200.0)
    assert "--max-time 5 s" in guard(max_time=5).timed_out().message
    silent = guard(max_time=500, read_timeout=7).timed_out()
    assert (silent.kind, silent.message, silent.retryable) == ("timeout", "no data for 7 s", True)


def test_next_read_timeout_never_passes_a_deadline(monkeypatch):
    import fetcher.download.guards as guards

    monkeypatch.setattr(guards.time, "monotonic", lambda: 102.0)
    assert guard(read_timeout=30).next_read_timeout() == 30
    assert guard(max_time=5, read_timeout=30).next_read_timeout() == pytest.approx(3.0)
    assert guard(min_speed=1, min_speed_time=4, read_timeout=30).next_read_timeout() == pytest.approx(2.0)
    monkeypatch.setattr(guards.time, "monotonic", lambda: 104.995)
    assert guard(max_time=5).next_read_timeout() == 0.01  # a floor: never 0 (a blocking socket)


def test_the_size_cap_counts_every_byte():
    g = guard(max_size=10)
    g.account(4)
    g.account(6)
    assert g.size == 10
    fails(g.account, 1, kind="too-large", word="over --max-size 10 bytes")
    guard(max_size=0).account(10**9)


@pytest.mark.parametrize(("length", "encoded", "offset", "refused"), [
    ("11", False, 0, True), ("10", False, 0, False), ("6", False, 5, True), ("5", False, 5, False),
    ("11", True, 0, False), (None, False, 0, False), ("abc", False, 0, False), ("", False, 0, False)])
def test_a_declared_length_over_the_cap_is_refused_unless_encoded(length, encoded, offset, refused):
    g = guard(max_size=10)
    if refused:
        fails(g.check_declared_size, length, encoded, offset, kind="too-large",
              word=f"Content-Length {int(length) + offset} is over --max-size 10")
    else:
        g.check_declared_size(length, encoded, offset)
    guard(max_size=0).check_declared_size("99999", False)


@pytest.mark.parametrize(("content_type", "accept", "ok"), [
    ("image/jpeg", ("image/*",), True), ("IMAGE/PNG; charset=x", ("image/png",), True),
    ("text/html", ("image/*",), False), (None, ("image/*",), False), ("text/html", (), True),
    ("application/pdf", ("image/*", "application/pdf"), True)])
def test_content_type_against_accept(content_type, accept, ok):
    if ok:
        check_content_type(content_type, accept)
    else:
        shown = (content_type or "").split(";")[0] or "(none)"
        fails(check_content_type, content_type, accept, word=f"Content-Type {shown!r} is not accepted")


@pytest.mark.parametrize(("content_type", "head", "ok"), [
    ("image/jpeg", b"\xff\xd8\xff\xe0", True), ("image/png", b"\x89PNG\r\n\x1a\n...", True),
    ("image/webp", b"RIFF\x00\x00\x00\x00WEBP", True), ("image/jpeg", b"<html>oops", False),
    ("image/svg+xml", b"\xef\xbb\xbf <svg xmlns=...>", True), ("image/svg+xml", b"<?xml ...><html>", False),
    ("application/pdf", b"%PDF-1.7", True), ("application/pdf", b"<html>", False),
    ("text/html", b"anything", True), (None, b"", True)])
def test_magic_bytes_against_the_declared_type(content_type, head, ok):
    if ok:
        check_magic(content_type, head)
    else:
        fails(check_magic, content_type, head, word="body does not look like")


@pytest.mark.parametrize(("value", "ok"), [
    (None, True), ("", True), ("gzip", True), (" X-GZIP ", True), ("deflate, gzip", True), ("identity", True),
    ("br", False), ("gzip, zstd", False), ("compress", False)])
def test_only_the_codings_both_clients_decode_are_taken(value, ok):
    headers = {} if value is None else {"Content-Encoding": value}
    if ok:
        check_encoding(headers)
    else:
        fails(check_encoding, headers, word="was not asked for")
    assert is_encoded(headers) is (value is not None and value.strip().lower() not in ("", "identity"))


@pytest.mark.parametrize(("headers", "received", "short"), [
    ({"Content-Length": "10"}, 9, True), ({"Content-Length": "10"}, 10, False), ({}, 0, False),
    ({"Content-Length": "10", "Content-Encoding": "gzip"}, 3, False), ({"Content-Length": "x"}, 0, False)])
def test_a_body_shorter_than_declared_is_truncated(headers, received, short):
    if short:
        failure = fails(check_complete, headers, 200, received, kind="truncated",
                        word=f"body ended after {received} of 10 bytes", retryable=True)
        assert failure.http_status == 200
    else:
        check_complete(headers, 200, received)
