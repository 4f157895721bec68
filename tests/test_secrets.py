"""Secrets stay secret, end to end, on every backend x client pair and in distributed mode.

A run whose URLs carry a password (and a user-name-only token), whose headers carry a bearer
token (read from a file, as ``--header @FILE``) and whose cookies file carries a cookie: the
secret appears in no file under ``-o`` (the journal's SQLite files included, read as bytes), in
neither captured stream, in ``fetcher status`` and in no process's command line. And one
precedence on both clients: ``Authorization`` header > credentials in the URL > netrc.

Each run is ``python -m fetcher`` in a subprocess, so gevent patches only there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest
from cluster import cluster_on, manifest, wait_until
from conftest import NEEDS_PYCURL, write_list
from proc_helpers import HAVE_PROC, RUN_TIMEOUT_S, Variant, descendants, read_manifest, run_cli

PASSWORD, TOKEN, COOKIE, USER_TOKEN = "s3cretpw", "TOPSECRETTOKEN", "COOKIESECRET", "TOKENUSER"
SECRETS = [PASSWORD, TOKEN, COOKIE, USER_TOKEN, base64.b64encode(f"alice:{PASSWORD}".encode()).decode()]

PAIRS = [Variant("thread"), Variant("process"), Variant("gevent"),
         pytest.param(Variant("thread", flags=("--client", "curl")), marks=NEEDS_PYCURL),
         pytest.param(Variant("process", flags=("--client", "curl")), marks=NEEDS_PYCURL),
         pytest.param(Variant("gevent", flags=("--client", "curl")), marks=NEEDS_PYCURL),
         pytest.param(Variant("multi", flags=("--client", "curl")), marks=NEEDS_PYCURL)]


@pytest.fixture(params=PAIRS, ids=lambda v: v.id if isinstance(v, Variant) else None)
def pair(request: pytest.FixtureRequest) -> Variant:
    return request.param


def with_user(url: str, userinfo: str) -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


def leaks(where: str, data: bytes | str) -> list[str]:
    blob = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return [f"{secret} in {where}" for secret in SECRETS if secret.encode() in blob]


def leaks_under(root: str, skip: set[str] = frozenset()) -> list[str]:
    """Every secret found in any file under ``root`` (but the paths in ``skip``), read as bytes."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if path not in skip:
                with open(path, "rb") as handle:
                    found += leaks(os.path.relpath(path, root), handle.read())
    return found


def secret_files(tmp_path) -> tuple[str, str]:
    """(``@FILE`` for --header, a cookies.txt), outside every output folder."""
    headers = tmp_path / "headers.txt"
    headers.write_text(f"Authorization: Bearer {TOKEN}\n", encoding="utf-8")
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\t{COOKIE}\n",
                       encoding="utf-8")
    return f"@{headers}", str(cookies)


def secret_lines(server) -> list[str]:
    """URLs with credentials that end every way a URL can: ok, redirected, failed, refused, bad lines."""
    auth = f"alice:{PASSWORD}"
    return [with_user(server.url("/files/a.jpg?size=100"), auth),
            with_user(server.url("/files/b.jpg?size=100"), USER_TOKEN),
            with_user(server.url("/redirect/moved.jpg"), auth),
            with_user(server.url("/status/404"), auth),
            f"http://{auth}@127.0.0.1:1/refused",
            f"http://{auth}@127.0.0.1:notaport/x",
            f"ftp://{auth}@127.0.0.1/x",
            f"http://alice:{PASSWORD} @exa mple.com/x",
            f"alice:{PASSWORD}@127.0.0.1/no-scheme",
            f"http://alice:{PASSWORD}{'x' * 300}@exa mple.com/a-bad-line-cut-short-in-its-password"]


def status_of(out: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fetcher", "status", "-o", out], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)


def test_no_secret_in_files_output_or_status(pair, server, tmp_path, out) -> None:
    header, cookies = secret_files(tmp_path)
    args = [write_list(tmp_path, secret_lines(server)), "-o", out, "-v", "--retries", "0", "--header", header,
            "--cookies", cookies]

    first = run_cli(pair, args)
    second = run_cli(pair, args)  # a rerun finds the URLs with credentials in the journal
    status = status_of(out)

    assert first.returncode == second.returncode == 1, first.stderr + second.stderr
    assert status.returncode == 0, status.stderr
    records = {r["url"]: r for r in read_manifest(os.path.join(out, "manifest.jsonl"))}
    assert records[with_user(server.url("/files/a.jpg?size=100"), "alice:***")]["status"] == "skipped"
    assert records[with_user(server.url("/files/b.jpg?size=100"), "***")]["status"] == "skipped"
    assert server.stats.requests["/files/a.jpg"] == 1 and server.stats.requests["/files/b.jpg"] == 1
    assert "alice:***@" in first.stdout and "404" in status.stdout  # the failure line: standard output
    assert leaks_under(out) + leaks("first run", first.stdout + first.stderr) + leaks(
        "rerun", second.stdout + second.stderr) + leaks("status", status.stdout + status.stderr) == []


def echoed(out: str) -> dict[str, dict[str, str]]:
    """The request headers /echo saw, by the echo URL's query, as the manifest says where each went."""
    seen = {}
    for record in read_manifest(os.path.join(out, "manifest.jsonl")):
        assert record["status"] == "ok", record
        with open(os.path.join(out, record["path"]), encoding="utf-8") as handle:
            seen[record["url"].rsplit("?", 1)[1]] = json.load(handle)
    return seen


def basic(userinfo: str) -> str:
    return "Basic " + base64.b64encode(userinfo.encode()).decode()


def test_header_beats_url_credentials_which_beat_netrc_and_none_follows_a_redirect(pair, server, tmp_path,
                                                                                   monkeypatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login nina password netrcpw\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # run_cli's subprocess inherits it
    elsewhere = server.url("/echo?redirected").replace("127.0.0.1", "localhost")  # another host name
    listing = write_list(tmp_path, [with_user(server.url("/echo?url"), "alice:pw"), server.url("/echo?netrc"),
                                    with_user(server.url(f"/redirect/r?to={elsewhere}"), "alice:pw")])
    header = tmp_path / "headers.txt"
    header.write_text("Authorization: Bearer explicit\n", encoding="utf-8")

    plain = run_cli(pair, [listing, "-o", str(tmp_path / "plain"), "-q"])
    explicit = run_cli(pair, [listing, "-o", str(tmp_path / "explicit"), "-q", "--header", f"@{header}"])

    assert plain.returncode == explicit.returncode == 0, plain.stderr + explicit.stderr
    assert {query: seen.get("Authorization") for query, seen in echoed(str(tmp_path / "plain")).items()} == {
        "url": basic("alice:pw"), "netrc": basic("nina:netrcpw"), "redirected": None}
    assert {query: seen.get("Authorization") for query, seen in echoed(str(tmp_path / "explicit")).items()} == {
        "url": "Bearer explicit", "netrc": "Bearer explicit", "redirected": None}  # never to another host


@pytest.fixture(params=["manager", "redis"])
def cluster(request, tmp_path):
    """A cluster on either broker: headers and cookies travel through each."""
    with cluster_on(request.param, tmp_path) as running:
        yield running


def command_lines(pids: list[int]) -> str:
    text = ""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                text += handle.read().replace(b"\0", b" ").decode("utf-8", "replace") + "\n"
        except OSError:
            pass  # gone already
    return text


@pytest.mark.skipif(not HAVE_PROC, reason="reads command lines from /proc")
def test_serve_and_work_keep_secrets_and_ship_headers_and_cookies(server, cluster, tmp_path) -> None:
    header, cookies = secret_files(tmp_path)
    echo = with_user(server.url("/echo?shipped"), f"alice:{PASSWORD}")
    slow = with_user(server.url("/slow/s.bin?delay=1&size=10"), f"alice:{PASSWORD}")
    listing = write_list(tmp_path, [*secret_lines(server), echo, slow])
    out, worker_out = str(tmp_path / "srv"), str(tmp_path / "worker")
    srv = cluster.serve(listing, out, "-v", "--retries", "0", "--header", header, "--cookies", cookies)
    os.remove(cookies)  # read by serve at start: a worker gets headers and cookies only through the broker
    os.remove(header[1:])
    worker = cluster.work(srv.address, worker_out, "--backend", "process", "--pool", "3")
    wait_until(lambda: server.stats.active >= 1, what="the slow download")
    running = command_lines([srv.proc.pid, worker.proc.pid, *descendants(worker.proc.pid)])
    assert srv.wait() == 1 and worker.wait() == 0
    status = status_of(out)

    assert "fetcher" in running and leaks("command lines", running) == []
    records = manifest(out)
    shipped = records[redact_url(echo)]
    echo_file = os.path.join(shipped["worker"]["out"], shipped["path"])
    with open(echo_file, encoding="utf-8") as handle:
        seen = json.load(handle)
    assert seen["Authorization"] == f"Bearer {TOKEN}"  # the header reached the worker through the broker,
    assert seen["Cookie"] == f"session={COOKIE}"  # and so did the cookies file's content
    assert not [name for name in os.listdir(worker_out) if "cookies" in name]
    assert leaks_under(out) + leaks_under(worker_out, skip={echo_file}) + leaks("serve", srv.text()) + leaks(
        "work", worker.text()) + leaks("status", status.stdout + status.stderr) == []


def redact_url(url: str) -> str:
    return url.replace(f":{PASSWORD}@", ":***@")


def test_a_webdataset_run_keeps_secrets_out_of_shards_index_and_parquet(server, tmp_path, out) -> None:
    """Shards name samples by a key of the URL's journal identity, never a plain hash of a password."""
    pytest.importorskip("PIL.Image")
    pytest.importorskip("pyarrow.parquet")
    urls = [with_user(server.url(f"/img/s{i}.png?format=png&w=20&h=20"), f"alice:{PASSWORD}") for i in range(3)]
    args = [write_list(tmp_path, urls), "-o", out, "-v", "--output-format", "webdataset", "--shard-size", "2",
            "--manifest-format", "parquet"]

    first = run_cli(Variant("thread"), args)
    os.remove(os.path.join(out, ".fetcher", "shards.sqlite3"))  # the next run reads the shards back
    second = run_cli(Variant("thread"), args)

    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert sorted(n for n in os.listdir(out) if n.endswith(".tar")) == ["00000.tar", "00001.tar"]
    assert {r["status"] for r in read_manifest(os.path.join(out, "manifest.jsonl"))} == {"skipped"}
    assert server.stats.requests["/img/s0.png"] == 1
    plain_keys = [hashlib.sha1(url.encode()).hexdigest() for url in urls]
    assert leaks_under(out) + leaks("runs", first.stderr + second.stderr) == []
    for name in ("00000.tar", "00001.tar"):  # an unkeyed hash of a URL lets anyone test password guesses
        with open(os.path.join(out, name), "rb") as handle:
            assert not [key for key in plain_keys if key.encode() in handle.read()]
