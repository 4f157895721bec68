"""``--robots`` against the test server's robots.txt variants and its request counters."""

from __future__ import annotations

import os

import pytest
from cluster import Cluster, cluster_on, manifest
from conftest import NEEDS_PYCURL, write_list
from proc_helpers import Variant, read_manifest, run_cli, wait_until

from fetcher.run.robots import Answer, RobotsGate
from fetcher.run.robots_rules import RobotsRules

SETUPS = [Variant("thread"), pytest.param(Variant("multi", flags=("--client", "curl")), marks=NEEDS_PYCURL),
          Variant("gevent"), Variant("process", flags=("--processes", "2"))]
ROBOTS = "User-agent: *\nDisallow: /files/private\nAllow: /files/private/open\n"


@pytest.fixture(params=SETUPS, ids=lambda v: v.id if isinstance(v, Variant) else None)
def variant(request: pytest.FixtureRequest) -> Variant:
    return request.param


def records_by_path(out: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {r["url"].split("/", 3)[3].split("?")[0]: r for r in read_manifest(os.path.join(out, "manifest.jsonl"))}


def test_disallowed_urls_are_recorded_and_never_requested(server, variant, tmp_path, out) -> None:
    server.robots = (200, ROBOTS)
    urls = [server.url(p) for p in ("/files/a.bin", "/files/private/b.bin", "/files/private/open/c.bin",
                                    "/files/private/d.bin?x=1", "/files/e.bin")]
    done = run_cli(variant, [write_list(tmp_path, urls), "-o", out, "--robots", "--pool", "4"])

    assert done.returncode == 1, done.stderr
    records = records_by_path(out)
    assert {p: (r["error"] or {}).get("kind") for p, r in records.items()} == {
        "files/a.bin": None, "files/private/b.bin": "robots", "files/private/open/c.bin": None,
        "files/private/d.bin": "robots", "files/e.bin": None}
    assert "disallowed by http://127.0.0.1:" in records["files/private/b.bin"]["error"]["message"]
    assert records["files/private/b.bin"]["attempts"] == 0
    requests = server.stats.requests
    assert requests["/robots.txt"] == 1  # once per origin, before its first request
    assert requests["/files/private/b.bin"] == requests["/files/private/d.bin"] == 0
    assert server.stats.times["/robots.txt"][0] < min(server.stats.times["/files/a.bin"])


@pytest.mark.parametrize("code", [404, 403, 410])
def test_a_missing_robots_txt_allows_everything(server, code, tmp_path, out) -> None:
    server.robots = (code, "User-agent: *\nDisallow: /\n")  # the body of an error answer means nothing
    urls = [server.url(f"/files/{i}.bin") for i in range(3)]
    done = run_cli(Variant("thread"), [write_list(tmp_path, urls), "-o", out, "--robots"])
    assert done.returncode == 0, done.stderr
    assert server.stats.requests["/robots.txt"] == 1 and server.stats.requests["/files/0.bin"] == 1


def test_a_robots_txt_answering_5xx_keeps_the_host_out_after_its_retries(server, tmp_path, out) -> None:
    server.robots = (503, "busy")
    urls = [server.url(f"/files/{i}.bin") for i in range(3)]
    done = run_cli(Variant("thread"), [write_list(tmp_path, urls), "-o", out, "--robots", "--retries", "1",
                                       "--backoff", "0.05"])
    assert done.returncode == 1
    records = records_by_path(out)
    assert {r["error"]["kind"] for r in records.values()} == {"robots"}
    assert {r["error"]["message"] for r in records.values()} == {"robots.txt unreachable: HTTP 503"}
    assert server.stats.requests["/robots.txt"] == 2  # one retry, then the host is given up
    assert sum(n for p, n in server.stats.requests.items() if p.startswith("/files/")) == 0


def test_an_unreachable_robots_txt_keeps_the_host_out(server, tmp_path, out) -> None:
    urls = [server.url("/files/ok.bin"), "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
    done = run_cli(Variant("thread"), [write_list(tmp_path, urls), "-o", out, "--robots", "--retries", "0"])
    assert done.returncode == 1
    records = records_by_path(out)
    assert records["files/ok.bin"]["status"] == "ok"
    assert records["a"]["error"]["kind"] == records["b"]["error"]["kind"] == "robots"
    assert records["a"]["error"]["message"].startswith("robots.txt unreachable: ")


def test_without_the_flag_robots_txt_is_never_fetched(server, tmp_path, out) -> None:
    server.robots = (200, "User-agent: *\nDisallow: /\n")
    done = run_cli(Variant("thread"), [write_list(tmp_path, [server.url("/files/x.bin")]), "-o", out])
    assert done.returncode == 0
    assert server.stats.requests["/robots.txt"] == 0 and server.stats.requests["/files/x.bin"] == 1


def test_the_group_of_the_user_agents_product_token_applies(server, tmp_path, out) -> None:
    server.robots = (200, "User-agent: *\nDisallow: /files/b\n\nUser-agent: mybot\nDisallow: /files/a\n")
    urls = [server.url("/files/a.bin"), server.url("/files/b.bin")]
    done = run_cli(Variant("thread"), [write_list(tmp_path, urls), "-o", out, "--robots",
                                       "--user-agent", "MyBot/2.0 (+https://example.org/bot)"])
    assert done.returncode == 1
    records = records_by_path(out)
    assert records["files/a.bin"]["error"]["kind"] == "robots" and records["files/b.bin"]["status"] == "ok"


def test_crawl_delay_spaces_the_requests_to_the_host(server, tmp_path, out) -> None:
    server.robots = (200, "User-agent: *\nCrawl-delay: 0.6\n")
    urls = [server.url(f"/files/{i}.bin") for i in range(3)]
    done = run_cli(Variant("thread"), [write_list(tmp_path, urls), "-o", out, "--robots", "--pool", "3"])
    assert done.returncode == 0, done.stderr
    times = sorted([server.stats.times["/robots.txt"][0]] + [server.stats.times[f"/files/{i}.bin"][0]
                                                              for i in range(3)])
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.6 - 0.01, gaps  # a gap the server saw: behaviour, not a speed


def test_robots_txt_counts_as_a_request_to_its_host(server, tmp_path, out) -> None:
    """--delay spaces the host's first download from its robots.txt too, and --per-host 1 holds
    with robots.txt among the host's requests (it is fetched beside the pool, not by it)."""
    server.robots = (200, "User-agent: *\nDisallow: /files/private\n")
    done = run_cli(Variant("thread"), [write_list(tmp_path, [server.url("/files/0.bin")]), "-o", out, "--robots",
                                       "--delay", "3"])
    assert done.returncode == 0, done.stderr
    [asked], [first] = server.stats.times["/robots.txt"], server.stats.times["/files/0.bin"]
    assert first - asked >= 3 - 0.01  # a gap the server saw: behaviour, not a speed (before: 0.05-1.7 s)

    other = str(tmp_path / "per-host")
    urls = [server.url(f"/files/h{i}.bin?size=50000") for i in range(6)]
    done = run_cli(Variant("thread"), [write_list(tmp_path, urls, "h.txt"), "-o", other, "--robots",
                                       "--per-host", "1", "--pool", "4"])
    assert done.returncode == 0, done.stderr
    assert server.stats.requests["/robots.txt"] == 2 and server.stats.max_active == 1


@pytest.mark.parametrize("broker", ["manager", "redis"])
def test_serve_fetches_robots_txt_once_for_all_its_workers(server, tmp_path, broker) -> None:
    server.robots = (200, ROBOTS)
    urls = [server.url(f"/files/{i}.bin") for i in range(6)] + [server.url("/files/private/p.bin")]
    with cluster_on(broker, tmp_path) as cluster:
        srv = cluster.serve(write_list(tmp_path, urls), str(tmp_path / "srv"), "--robots")
        joined = server.hold("/files/")  # until both have joined: else one could end the run alone
        workers = [cluster.work(srv.address, str(tmp_path / f"w{i}"), "--pool", "2", *flags, name=f"work{i}")
                   for i, flags in enumerate([(), ("--backend", "process")])]
        cluster.wait_joined(srv.address, 2)
        joined.set()
        assert srv.wait() == 1 and all(w.wait() == 0 for w in workers)
    records = manifest(str(tmp_path / "srv"))
    assert [r["error"]["kind"] for r in records.values() if r["error"]] == ["robots"]
    assert server.stats.requests["/robots.txt"] == 1 and server.stats.requests["/files/private/p.bin"] == 0


def test_the_gate_asks_each_origin_once_and_keeps_its_answer() -> None:
    from fetcher.options import Options

    asked: list[str] = []

    def fetch(origin: str, addresses: tuple[str, ...] | None = None) -> Answer:
        asked.append(origin)
        return Answer(RobotsRules.parse("User-agent: *\nDisallow: /no\n", "x"), None, 0.0)

    gate = RobotsGate(Options.create(robots=True), fetch)
    try:
        assert gate.verdict("http://h:81/no") == "wait" and gate.verdict("http://h:81/yes") == "wait"
        for _ in range(500):
            if gate.resolved() or not gate.asking:
                break
            import time

            time.sleep(0.01)
        assert gate.verdict("http://h:81/yes") == "allow"
        assert gate.verdict("http://u:p@h:81/no") == "disallowed by http://h:81/robots.txt"
        assert gate.verdict("https://h:81/no") == "wait"  # another scheme is another origin
    finally:
        gate.close()
    assert asked[0] == "http://h:81"


def test_the_delay_holds_where_the_server_sees_it_across_two_workers(server, tmp_path) -> None:
    """Issue 27: serve --delay 1 --per-host 1 with two workers let the server see 0.84 s apart.

    Worker A leases a slow download of another host and g0, which waits in A's queue behind
    it; B then leases g1. Counted from the leases, g1 went out before g0 left A; counted from
    g0's answer (and one request at a time), the gap holds at the server's own clock.

    g1 is answered only once B is in the run (its arrival, what the gap is measured at, is not
    held): on a loaded machine A could otherwise fetch all three before B connected, serve then
    ended the run, and B waited for a server that was gone.
    """
    joined = server.hold("/files/g1.bin")
    port = server.server_address[1]
    urls = [f"http://localhost:{port}/slow/s.bin?delay=1&size=10", server.url("/files/g0.bin"),
            server.url("/files/g1.bin")]
    cluster = Cluster(tmp_path)
    try:
        srv = cluster.serve(write_list(tmp_path, urls), str(tmp_path / "srv"), "-q", "--delay", "0.7",
                            "--per-host", "2")
        first = cluster.work(srv.address, str(tmp_path / "a"), "--pool", "1", "--prefetch", "1", name="work-a")
        wait_until(lambda: server.stats.requests["/slow/s.bin"] >= 1, what="worker A's slow download")
        second = cluster.work(srv.address, str(tmp_path / "b"), "--pool", "2", name="work-b")
        cluster.wait_joined(srv.address, 2)
        joined.set()
        assert srv.wait() == 0 and first.wait() == 0 and second.wait() == 0
    finally:
        cluster.close()
    [g0], [g1] = server.stats.times["/files/g0.bin"], server.stats.times["/files/g1.bin"]
    assert abs(g1 - g0) >= 0.7, (g0, g1)
