"""Hostile HTTP servers (tests/hostile_server.py, raw sockets) on every backend x client pair.

For every URL of every pair: exactly one manifest record; ``ok`` only with exactly the bytes the
server meant; a failure with a real kind (never ``internal``); no traceback; the run ends within a
bound. Some cases also pin the kind and the words, the same on every pair: a malformed status line
or an HTTP/0.9 reply is a ``malformed response`` (28b5069 said ``redirect`` with libcurl), a refused
redirect is worded once for both clients, headers trickled a byte at a time end at ``--max-time``
with requests (28b5069 waited as long as the server liked).

As in test_parity.py, the pairs' runs go all at once against one server, so the module costs
about one run's time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import NEEDS_PYCURL
from hostile_server import BEHAVIOURS, HostileServer, body_of
from proc_helpers import read_manifest
from test_parity import PAIRS, pair_id

RUN_TIMEOUT_S = 150  # a hang guard for 7 parallel runs on a loaded machine, not a timing assertion
FLAGS = ["--timeout", "3", "--max-time", "4", "--retries", "1", "--backoff", "0", "--pool", "8",
         "--max-retry-after", "1", "-q"]
SECRET = "s3cret-in-location"
KEEP_ALIVE_URLS = 6  # on one host: pooled connections the server hangs up on get reused


@dataclass(frozen=True)
class Expect:
    """How a case may end: ``kinds`` allowed (None: ok); ``message`` a prefix every failure has."""

    kinds: frozenset[str | None]
    message: str = ""
    requests_message: str = ""  # a word the requests transport's failure must hold


OK = Expect(frozenset({None}))
ANY = Expect(frozenset({None, "connect", "truncated", "bad-content", "http-status", "timeout"}))
MALFORMED = Expect(frozenset({"connect"}), "malformed response: ")


def redirect_refused(scheme: str) -> Expect:
    return Expect(frozenset({"redirect"}), f"redirected to an unsupported URL ({scheme}:): only http and https "
                  "are followed")


EXPECT: dict[str, Expect] = {
    "ok": OK, "keep-alive": OK, "gzip-ok": OK, "close-after-one": OK, "redirect-credentials": OK,
    "bad-status": MALFORMED, "garbage-status": MALFORMED, "http09": MALFORMED,
    "huge-header": Expect(frozenset({"connect"})), "many-headers": ANY, "nul-header": ANY,
    "non-utf8-header": ANY, "conflicting-length": Expect(frozenset({"connect"}), "malformed response: "),
    "negative-length": ANY, "bad-chunked": Expect(frozenset({"truncated", "connect"})),
    "bad-gzip": Expect(frozenset({"bad-content"})), "bad-br": Expect(frozenset({"bad-content"})),
    "bad-zstd": Expect(frozenset({"bad-content"})),
    "informational": Expect(frozenset({None, "http-status"})),
    "retry-after-huge": Expect(frozenset({"http-status"})), "retry-after-negative": Expect(frozenset({"http-status"})),
    "retry-after-garbage": Expect(frozenset({"http-status"})),
    "retry-after-far-date": Expect(frozenset({"http-status"})),
    "redirect-file": redirect_refused("file"), "redirect-ftp": redirect_refused("ftp"),
    "redirect-gopher": redirect_refused("gopher"),
    "trickle": Expect(frozenset({"timeout"}), requests_message="--max-time 4"),
}
assert set(EXPECT) == set(BEHAVIOURS)


def case_paths(pid: str) -> list[str]:
    paths = [f"/{name}/{pid}" for name in BEHAVIOURS if name != "close-after-one"]
    return paths + [f"/close-after-one/{pid}-{i}" for i in range(KEEP_ALIVE_URLS)]


@dataclass
class Runs:
    server: HostileServer
    records: dict[str, dict[str, dict]]  # pair id -> url -> manifest record
    stderr: dict[str, str]
    failures: dict[str, str]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = str(tmp_path_factory.mktemp("hostile"))
    server = HostileServer().start()
    started: dict[str, subprocess.Popen[str]] = {}
    records: dict[str, dict[str, dict]] = {}
    stderr: dict[str, str] = {}
    failures: dict[str, str] = {}
    try:
        for pair in PAIRS:
            pid = pair_id(pair)
            folder = os.path.join(root, pid)
            os.makedirs(folder)
            with open(os.path.join(folder, "urls.txt"), "w", encoding="utf-8") as handle:
                handle.write("\n".join(server.url(path) for path in case_paths(pid)) + "\n")
            argv = [sys.executable, "-m", "fetcher", os.path.join(folder, "urls.txt"), "-o",
                    os.path.join(folder, "out"), "--backend", pair[0], "--client", pair[1], *FLAGS]
            started[pid] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, text=True, start_new_session=True)
        for pid, process in started.items():
            try:
                _, stderr[pid] = process.communicate(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                failures[pid] = "the run hung"
                continue
            manifest = os.path.join(root, pid, "out", "manifest.jsonl")
            if process.returncode not in (0, 1) or not os.path.exists(manifest):
                failures[pid] = f"the run exited {process.returncode}: {stderr[pid][-2000:]}"
                continue
            listed = read_manifest(manifest)
            records[pid] = {r["url"]: r for r in listed}
            if len(records[pid]) != len(listed):
                failures[pid] = "a URL has two records"
        yield Runs(server, records, stderr, failures)
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        server.stop()


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_every_url_ends_with_one_honest_record(runs: Runs, pair: tuple[str, str]) -> None:
    pid = pair_id(pair)
    assert pid not in runs.failures, runs.failures.get(pid)
    assert "Traceback" not in runs.stderr[pid], runs.stderr[pid][-3000:]
    records = runs.records[pid]
    assert set(records) == {runs.server.url(path) for path in case_paths(pid)}
    wrong = []
    for url, record in records.items():
        path = "/" + url.split("/", 3)[3]
        name = path.split("/")[1]
        expect, error = EXPECT[name], record["error"] or {}
        if record["status"] == "ok":
            expected_path = "/ok/after-credentials" if name == "redirect-credentials" else path
            body = body_of(expected_path)
            good = record["sha256"] == hashlib.sha256(body).hexdigest() and record["bytes"] == len(body)
            if None not in expect.kinds or not good:
                wrong.append(f"{name}: ok with {record['bytes']} bytes (sha256 right: {good})")
            continue
        if error.get("kind") not in expect.kinds:
            wrong.append(f"{name}: {error}")
        elif not error.get("message", "").startswith(expect.message):
            wrong.append(f"{name}: message {error.get('message')!r} does not start {expect.message!r}")
        elif pair[1] == "requests" and expect.requests_message not in error.get("message", ""):
            wrong.append(f"{name}: message {error.get('message')!r} lacks {expect.requests_message!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_credentials_from_a_location_header_are_never_written(runs: Runs, pair: tuple[str, str]) -> None:
    pid = pair_id(pair)
    assert pid not in runs.failures, runs.failures.get(pid)
    for record in runs.records[pid].values():
        assert SECRET not in str(record)
    assert SECRET not in runs.stderr[pid]


def test_a_hung_up_keep_alive_connection_loses_no_request(runs: Runs) -> None:
    """The server says keep-alive, then hangs up: a request sent on that pooled connection is sent again
    (by the client, or as a retry), so every URL reached the server and was saved (its bytes: above)."""
    for pair in PAIRS:
        pid = pair_id(pair)
        assert pid not in runs.failures, runs.failures.get(pid)
        for i in range(KEEP_ALIVE_URLS):
            url = runs.server.url(f"/close-after-one/{pid}-{i}")
            assert runs.server.requests[f"/close-after-one/{pid}-{i}"] >= 1
            assert runs.records[pid][url]["status"] == "ok", runs.records[pid][url]


@pytest.mark.parametrize("client", ["requests", pytest.param("curl", marks=NEEDS_PYCURL)])
def test_a_request_on_a_connection_the_server_hung_up_is_sent_again_without_a_retry(tmp_path, client):
    """--retries 0: the server says keep-alive, then closes; the next request on that pooled connection
    is sent again on a new one (libcurl does; 28b5069's requests transport lost every other URL)."""
    server = HostileServer().start()
    try:
        urls = [server.url(f"/close-after-one/{client}-again-{i}") for i in range(12)]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        out = str(tmp_path / "out")
        done = subprocess.run([sys.executable, "-m", "fetcher", str(tmp_path / "urls.txt"), "-o", out, "-q",
                               "--client", client, "--backend", "thread", "--pool", "1", "--retries", "0"],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    records = {r["url"]: r for r in read_manifest(os.path.join(out, "manifest.jsonl"))}
    for url in urls:
        assert records[url]["status"] == "ok" and records[url]["attempts"] == 1
        assert records[url]["sha256"] == hashlib.sha256(body_of("/" + url.split("/", 3)[3])).hexdigest()
