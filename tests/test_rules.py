"""Fetching rules end to end against the loopback server: retries, deadlines,
politeness, validation, redirects, request headers.

Every test runs on every transport (``--client``) and on the multi backend,
which drives libcurl itself (the ``setup`` fixture): the rules must hold
identically on all. Tests of scheduling policy alone, which no transport is
involved in, pin the thread backend with requests to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import write_list
from server import TestServer, image_body

from fetcher.cli.main import main as cli_main

_setup: list[list[str]] = [[]]
policy_only = pytest.mark.parametrize("setup", [[]], ids=["requests"])


@pytest.fixture(autouse=True)
def _on_setup(setup):
    _setup[0] = setup


def main(argv: list[str]) -> int:
    """The CLI, on this test's transport and backend."""
    return cli_main([*argv, *_setup[0]])


def run(tmp_path, urls: list[str], *flags: str) -> tuple[int, dict[str, dict]]:
    out = str(tmp_path / "out")
    code = main([write_list(tmp_path, urls), "-o", out, "-q", *flags])
    with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as handle:
        records = {r["url"]: r for r in map(json.loads, handle)}
    return code, records


def kind(record: dict) -> str | None:
    return (record["error"] or {}).get("kind")


def no_files_but_manifest(tmp_path) -> bool:
    out = tmp_path / "out"
    return [p.name for p in out.rglob("*") if p.is_file() and ".fetcher" not in p.parts] == ["manifest.jsonl"]


# -- retries and Retry-After -------------------------------------------------

def test_429_retry_after_is_honoured_and_pauses_the_host(server, tmp_path):
    limited = server.url("/flaky/r.jpg?fail=1&code=429&retry_after=2")
    others = [server.url(f"/files/o{i}.jpg") for i in range(3)]
    code, records = run(tmp_path, [limited, *others], "--pool", "1")
    assert code == 0
    assert records[limited]["attempts"] == 2
    first_429 = server.stats.times["/flaky/r.jpg"][0]
    later = [t for path, times in server.stats.times.items() for t in times if t > first_429]
    assert later and min(later) - first_429 >= 1.9  # nothing went to the paused host sooner


def test_retry_after_is_capped(server, tmp_path):
    limited = server.url("/flaky/c.jpg?fail=1&code=503&retry_after=3600")
    started = time.monotonic()
    code, records = run(tmp_path, [limited], "--max-retry-after", "1")
    assert code == 0 and records[limited]["attempts"] == 2
    assert time.monotonic() - started < 60  # not an hour


def test_permanent_4xx_is_not_retried(server, tmp_path):
    code, records = run(tmp_path, [server.url("/status/403")], "--retries", "5")
    assert code == 1 and records[server.url("/status/403")]["attempts"] == 1


def test_error_bodies_are_drained_so_the_connection_serves_the_next_url(server, tmp_path):
    """Twenty 404s and five files over one keep-alive connection: a list full of dead links
    costs the server one connection, not one per dead link. A big error body is cut off."""
    dead = [server.url(f"/status/404?i={i}") for i in range(20)]
    big = server.url("/status/500?size=300000")
    files = [server.url(f"/files/k{i}.jpg") for i in range(5)]
    code, records = run(tmp_path, [*dead, *files], "--pool", "1", "--retries", "0")
    assert code == 1
    assert [kind(records[url]) for url in dead] == ["http-status"] * 20
    assert all(records[url]["status"] == "ok" for url in files)
    assert server.stats.connections == 1
    code, records = run(tmp_path, [big], "--retries", "0")
    assert kind(records[big]) == "http-status" and records[big]["http_status"] == 500
    assert "HTTP 500" in records[big]["error"]["message"]


# -- deadlines -----------------------------------------------------------------

def test_a_dripping_server_is_cut_off_by_max_time(server, tmp_path):
    drip = server.url("/drip/d.bin?size=1000&interval=0.2")  # would take 200 s
    started = time.monotonic()
    code, records = run(tmp_path, [drip], "--max-time", "1", "--retries", "0")
    assert time.monotonic() - started < 15
    assert code == 1 and kind(records[drip]) == "timeout"
    assert "max-time" in records[drip]["error"]["message"]
    assert no_files_but_manifest(tmp_path)


def test_a_stall_is_cut_off_by_min_speed(server, tmp_path):
    drip = server.url("/drip/s.bin?size=1000&interval=0.2")  # 5 B/s
    code, records = run(tmp_path, [drip], "--min-speed", "100", "--min-speed-time", "1", "--retries", "0")
    assert code == 1 and kind(records[drip]) == "timeout"
    assert "min-speed" in records[drip]["error"]["message"]


def test_a_silent_server_hits_the_read_timeout(server, tmp_path):
    slow = server.url("/slow/x.bin?delay=5")
    code, records = run(tmp_path, [slow], "--timeout", "0.5", "--retries", "0")
    assert code == 1 and kind(records[slow]) == "timeout"


# -- politeness -----------------------------------------------------------------

@policy_only
def test_per_host_cap_holds(server, tmp_path):
    urls = [server.url(f"/slow/p{i}.bin?delay=0.1") for i in range(24)]
    code, _ = run(tmp_path, urls, "--pool", "16", "--per-host", "3")
    assert code == 0
    assert server.stats.max_active <= 3


@policy_only
def test_a_slow_host_does_not_starve_the_others(server, tmp_path):
    other = TestServer().start()
    try:
        slow = [server.url(f"/slow/s{i}.bin?delay=0.2") for i in range(30)]
        fast = [other.url(f"/files/f{i}.bin") for i in range(5)]
        out = str(tmp_path / "out")
        assert main([write_list(tmp_path, slow + fast), "-o", out, "-q", "--pool", "8", "--per-host", "2"]) == 0
        with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as handle:
            order = [json.loads(line)["url"] for line in handle]
        assert max(order.index(u) for u in fast) < len(order) - 10  # fast host done long before the end
    finally:
        other.stop()


@policy_only
def test_delay_spaces_requests_to_one_host(server, tmp_path):
    urls = [server.url(f"/files/d{i}.bin") for i in range(3)]
    assert run(tmp_path, urls, "--pool", "4", "--delay", "0.5")[0] == 0
    starts = sorted(t for times in server.stats.times.values() for t in times)
    assert all(b - a >= 0.45 for a, b in zip(starts, starts[1:]))


def test_user_agent_headers_and_cookies_are_sent(server, tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc123\n")
    url = server.url("/echo")
    code, records = run(tmp_path, [url], "--user-agent", "my-bot/1.0", "--header", "X-Token: s3cret",
                        "--header", "Referer: https://example.com/", "--cookies", str(cookies))
    assert code == 0
    with open(tmp_path / "out" / records[url]["path"], encoding="utf-8") as handle:
        sent = json.load(handle)
    assert sent["User-Agent"] == "my-bot/1.0"
    assert sent["X-Token"] == "s3cret" and sent["Referer"] == "https://example.com/"
    assert "session=abc123" in sent["Cookie"]


def test_insecure_warns_loudly(server, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main([write_list(tmp_path, [server.url("/files/i.bin")]), "-o", out, "--insecure"]) == 0
    assert "TLS certificates are NOT verified" in capsys.readouterr().err


# -- validation -----------------------------------------------------------------

def test_gzip_bomb_is_stopped_by_max_size(server, tmp_path):
    bomb = server.url("/gzip/bomb.bin?size=67108864")  # 64 MiB of zeros, ~64 KiB on the wire
    code, records = run(tmp_path, [bomb], "--max-size", "1M")
    assert code == 1 and kind(records[bomb]) == "too-large"
    assert no_files_but_manifest(tmp_path)


def test_gzip_body_is_saved_decoded(server, tmp_path):
    url = server.url("/gzip/small.bin?size=5000")
    code, records = run(tmp_path, [url])
    assert code == 0 and records[url]["bytes"] == 5000
    assert (tmp_path / "out" / records[url]["path"]).read_bytes() == bytes(5000)


def test_max_size_with_and_without_content_length(server, tmp_path):
    declared = server.url("/files/big.bin?size=300000")
    chunked = server.url("/chunked/big.bin?size=300000")
    small = server.url("/chunked/small.bin?size=1000")
    code, records = run(tmp_path, [declared, chunked, small], "--max-size", "100K")
    assert code == 1
    assert kind(records[declared]) == "too-large" and kind(records[chunked]) == "too-large"
    assert records[small]["status"] == "ok" and records[small]["bytes"] == 1000
    assert server.stats.requests["/files/big.bin"] == 1  # too-large is not retried


def test_min_size(server, tmp_path):
    tiny = server.url("/files/tiny.bin?size=10")
    code, records = run(tmp_path, [tiny], "--min-size", "1K")
    assert code == 1 and kind(records[tiny]) == "too-small"


def test_html_served_as_an_image_is_rejected(server, tmp_path):
    fake = server.url("/html/fake.jpg?type=image/jpeg")
    real = server.url("/image/real.png?format=png&size=3000")
    page = server.url("/html/page.html?type=text/html")
    code, records = run(tmp_path, [fake, real, page], "--accept", "image/*,application/pdf")
    assert code == 1
    assert kind(records[fake]) == "bad-content" and "does not look like image/jpeg" in records[fake]["error"]["message"]
    assert kind(records[page]) == "bad-content" and "not accepted" in records[page]["error"]["message"]
    assert records[real]["status"] == "ok"
    assert (tmp_path / "out" / records[real]["path"]).read_bytes() == image_body("real.png", "png", 3000)
    assert server.stats.requests["/html/fake.jpg"] == 1  # bad content is not retried


# -- redirects -------------------------------------------------------------------

def test_redirects_are_followed_and_the_final_url_recorded(server, tmp_path):
    url = server.url("/redirect/r.jpg")
    code, records = run(tmp_path, [url])
    assert code == 0 and records[url]["final_url"] == server.url("/files/r.jpg")


def test_redirect_loop_and_limits(server, tmp_path):
    loop = server.url("/loop/l.jpg")
    too_far = server.url("/redirect/a?to=" + "/redirect/b")  # a -> b -> /files/b
    to_file = server.url("/redirect/f?to=file:///etc/passwd")
    code, records = run(tmp_path, [loop, too_far, to_file], "--max-redirects", "1")
    assert code == 1
    assert kind(records[loop]) == "redirect"
    assert kind(records[too_far]) == "redirect"
    assert kind(records[to_file]) == "redirect"
    code, records = run(tmp_path, [loop], "--max-redirects", "5")
    assert "loop" in records[loop]["error"]["message"]


@pytest.mark.parametrize("flags,message", [
    (["--max-size", "lots"], "max-size must be a size"),
    (["--header", "no colon here"], "header must look like"),
    (["--min-size", "2M", "--max-size", "1M"], "larger than max-size"),
    (["--cookies", "/nonexistent/cookies.txt"], "cookies file"),
    (["--delay", "-1"], "delay must be 0 or more"),
])
def test_bad_rule_flags_exit_2(server, tmp_path, capsys, flags, message):
    out = str(tmp_path / "out")
    assert main([write_list(tmp_path, [server.url("/files/a")]), "-o", out, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
