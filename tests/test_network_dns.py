"""The run's DNS cache: one lookup per host for the whole run, ahead of the downloads, whatever the backend.

The names exist only at tests/dns_server.py's resolver (``--dns-servers``), which counts the
queries it gets: a worker process that asked the system's resolver itself would find nothing,
so a download of such a name also proves the answer travelled with the task.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from cluster import Cluster, manifest
from conftest import NEEDS_PYCURL, write_list
from dns_server import DnsServer
from proc_helpers import Variant, read_manifest, run_cli
from redis_helper import RedisServer
from server import Handler

from fetcher.models import FetchTask
from fetcher.options import Options
from fetcher.run.dns import MAX_TTL_S, MIN_TTL_S, Answer, DnsGate

PAIRS = [Variant("thread"), Variant("process", flags=("--processes", "2")), Variant("gevent"),
         pytest.param(Variant("process", flags=("--client", "curl", "--processes", "2")), marks=NEEDS_PYCURL),
         pytest.param(Variant("gevent", flags=("--client", "curl")), marks=NEEDS_PYCURL),
         pytest.param(Variant("multi", flags=("--client", "curl")), marks=NEEDS_PYCURL)]


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    server = DnsServer(ttl=300).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("variant", PAIRS, ids=lambda v: v.id)
def test_each_host_is_looked_up_once_for_the_whole_run(server, dns, variant, tmp_path, out) -> None:
    port = server.server_address[1]
    urls = [f"http://{host}.fetcher-test:{port}/files/{host}{i}.bin?size=100" for host in ("a", "b", "c")
            for i in range(4)]
    urls += [f"http://nx-gone.fetcher-test:{port}/files/x{i}.bin" for i in range(3)]
    done = run_cli(variant, [write_list(tmp_path, urls), "-o", out, "--pool", "4", "--retries", "2",
                             "--dns-servers", dns.address])

    assert done.returncode == 1, done.stderr
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    kinds = sorted((r["error"] or {}).get("kind", "ok") for r in records)
    assert kinds == ["dns"] * 3 + ["ok"] * 12
    assert {r["error"]["message"] for r in records if r["error"]} == {
        "cannot resolve nx-gone.fetcher-test: domain name not found"}
    for host in ("a", "b", "c", "nx-gone"):
        assert dns.asked_once(f"{host}.fetcher-test"), dns.queries  # not once per process, URL or retry
    assert sum(n for path, n in server.stats.requests.items() if path.startswith("/files/x")) == 0


def test_robots_txt_is_asked_for_at_the_resolved_address(server, dns, tmp_path, out) -> None:
    server.robots = (200, "User-agent: *\nDisallow: /files/no\n")
    port = server.server_address[1]
    urls = [f"http://a.fetcher-test:{port}/files/yes.bin", f"http://a.fetcher-test:{port}/files/no.bin"]
    done = run_cli(Variant("thread"), [write_list(tmp_path, urls), "-o", out, "--robots", "--dns-servers",
                                       dns.address])
    assert done.returncode == 1, done.stderr
    kinds = sorted((r["error"] or {}).get("kind", "ok") for r in read_manifest(os.path.join(out, "manifest.jsonl")))
    assert kinds == ["ok", "robots"] and server.stats.requests["/robots.txt"] == 1
    assert dns.asked_once("a.fetcher-test"), dns.queries


def test_without_the_cache_the_workers_resolve_names_themselves(server, dns, tmp_path, out) -> None:
    urls = [f"http://a.fetcher-test:{server.server_address[1]}/files/a.bin"]
    done = run_cli(Variant("thread"), [write_list(tmp_path, urls), "-o", out, "--retries", "0",
                                       "--dns-servers", dns.address, "--no-dns-cache"])
    assert done.returncode == 1
    [record] = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert record["error"]["kind"] == "connect" and dns.asked("a.fetcher-test") == 0  # the system's resolver


class BothWorkersGate:
    """Holds every /files/ response until requests for ``paths`` different files wait at once.

    Each worker below downloads ``--pool 2`` at a time and nothing completes while held, so a
    third file asked for proves the other worker is fetching too. Without it, under load the
    first worker could finish all six URLs before the second (a process backend, slower to
    start) connected: the server then ends the run and leaves, and the late worker waits
    ``--give-up-after`` for a server that is gone (the run is over before it was told).
    """

    def __init__(self, paths: int = 3, deadline: float = 90.0) -> None:
        # deadline < retries x read timeout (4 x 30 s): before it, no held download can time
        # out and come back as a third file from the same worker.
        self.paths, self.deadline = paths, deadline
        self.seen: set[str] = set()  # files asked for while held
        self.opened = False  # by ``paths`` files at once, not by the deadline
        self._released = False  # opened, or past the deadline: every response goes
        self._cond = threading.Condition()

    def hold(self, path: str) -> None:
        with self._cond:
            if self._released:
                return
            self.seen.add(path)
            if len(self.seen) >= self.paths:
                self.opened = self._released = True
                self._cond.notify_all()
            elif not self._cond.wait_for(lambda: self._released, timeout=self.deadline):
                self._released = True
                self._cond.notify_all()

    def handler(self) -> type[Handler]:
        gate = self

        class Held(Handler):
            def _route(self, path: str, query: dict[str, str]) -> None:
                if path.startswith("/files/"):
                    gate.hold(path)
                super()._route(path, query)

        return Held


@pytest.mark.parametrize("broker", ["manager", "redis"])
def test_serve_resolves_once_for_all_its_workers(server, dns, broker, tmp_path) -> None:
    gate = BothWorkersGate()
    server.RequestHandlerClass = gate.handler()
    port = server.server_address[1]
    urls = [f"http://{host}.fetcher-test:{port}/files/{host}{i}.bin" for host in ("a", "b") for i in range(3)]
    redis = RedisServer(tmp_path / "redis").start() if broker == "redis" else None
    cluster = Cluster(tmp_path, None if redis is None else redis.url)
    try:
        srv = cluster.serve(write_list(tmp_path, urls), str(tmp_path / "srv"), "--dns-servers", dns.address)
        workers = [cluster.work(srv.address, str(tmp_path / f"w{i}"), "--pool", "2", *flags, name=f"work{i}")
                   for i, flags in enumerate([(), ("--backend", "process")])]
        assert srv.wait(180) == 0 and all(w.wait(60) == 0 for w in workers)
    finally:
        cluster.close()
        if redis is not None:
            redis.stop()
    assert gate.opened, f"only {sorted(gate.seen)} asked for: one worker fetched alone"
    assert [r["status"] for r in manifest(str(tmp_path / "srv")).values()] == ["ok"] * 6
    assert dns.asked_once("a.fetcher-test") and dns.asked_once("b.fetcher-test"), dns.queries


class Lookups:
    """A resolver the test answers by hand, counting what it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.pending: list[tuple[str, object]] = []

    def __call__(self, name: str, done) -> None:  # type: ignore[no-untyped-def]
        self.asked.append(name)
        self.pending.append((name, done))

    def answer(self, answer: Answer) -> None:
        for _name, done in self.pending:
            done(answer)  # type: ignore[operator]
        self.pending.clear()


def test_ttls_are_honoured_within_limits_and_a_stale_answer_serves_while_it_is_refreshed() -> None:
    now = [100.0]
    lookups = Lookups()
    gate = DnsGate(Options.create(), lookups, clock=lambda: now[0])
    task = FetchTask("http://h.example:81/x", "x")
    assert gate.admit(task) == "wait" and gate.admit(task) == "wait" and lookups.asked == ["h.example"]
    lookups.answer(Answer(("192.0.2.1",), ttl=5))
    gate.resolved()
    assert gate.admit(task).addresses == ("192.0.2.1",)  # type: ignore[union-attr]
    now[0] += MIN_TTL_S - 1  # a TTL of 5 s is held for MIN_TTL_S
    gate.admit(task)
    assert lookups.asked == ["h.example"]
    now[0] += 2
    assert gate.admit(task).addresses == ("192.0.2.1",)  # type: ignore[union-attr]  # stale, while asked again
    assert lookups.asked == ["h.example", "h.example"]
    lookups.answer(Answer(("192.0.2.2",), ttl=10 ** 9))
    gate.resolved()
    now[0] += MAX_TTL_S - 1
    assert gate.admit(task).addresses == ("192.0.2.2",) and len(lookups.asked) == 2  # type: ignore[union-attr]
    now[0] += 2
    gate.admit(task)
    assert len(lookups.asked) == 3


def test_addresses_skip_the_gate_and_a_failure_is_remembered() -> None:
    now = [0.0]
    lookups = Lookups()
    gate = DnsGate(Options.create(), lookups, clock=lambda: now[0])
    assert gate.admit(FetchTask("http://[::1]:8/x", "x")).addresses is None  # type: ignore[union-attr]
    assert gate.admit(FetchTask("http://10.0.0.1/x", "x")).addresses is None  # type: ignore[union-attr]
    assert gate.admit(FetchTask("http://bad.example/1", "1")) == "wait"
    lookups.answer(Answer(error="domain name not found"))
    gate.resolved()
    for i in range(5):
        assert gate.admit(FetchTask(f"http://bad.example/{i}", str(i))) == "cannot resolve bad.example: domain name not found"
    assert lookups.asked == ["bad.example"]


def test_without_pycares_getaddrinfo_answers() -> None:
    import time

    from fetcher.run.dns import SystemLookup

    lookup = SystemLookup()
    answers: dict[str, Answer] = {}
    try:
        lookup("localhost", lambda answer: answers.__setitem__("localhost", answer))
        lookup("nx-name.invalid", lambda answer: answers.__setitem__("nx", answer))
        deadline = time.monotonic() + 20
        while len(answers) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        lookup.close()
    assert answers["localhost"].error is None and answers["localhost"].addresses
    assert answers["nx"].error is not None and not answers["nx"].addresses


def test_lookups_at_once_are_bounded_and_the_rest_wait_their_turn() -> None:
    lookups = Lookups()
    gate = DnsGate(Options.create(pool=1), lookups)
    for i in range(70):
        assert gate.admit(FetchTask(f"http://h{i}.example/x", "x")) == "wait"
    assert len(lookups.asked) == 64  # at least 64, twice the pool
    name, done = lookups.pending.pop(0)
    done(Answer(("192.0.2.1",)))  # type: ignore[operator]
    gate.resolved()
    assert len(lookups.asked) == 65 and lookups.asked[-1] == "h64.example"
