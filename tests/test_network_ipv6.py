"""IPv6: literal addresses in URLs, and names with both an IPv4 and an IPv6 address where only one answers.

A name that resolves to 127.0.0.1 and ::1 is served on one of them only: the client must try
the other address (curl and requests do, given both). Through the run's DNS cache the names
are tests/dns_server.py's (``dual-*.fetcher-test``); without it (``--no-dns-cache``) the system
resolves them, from an /etc/hosts of the test's own, bind-mounted in a mount namespace that
only the fetcher process sees (``unshare -m``: root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import write_list
from dns_server import DnsServer
from proc_helpers import RUN_TIMEOUT_S
from server import TestServer, body_for

from fetcher.cli.main import main
from fetcher.run.dns import ipv6_configured

LISTEN = ["127.0.0.1", "::1"]


@pytest.fixture
def server6() -> Iterator[TestServer]:
    """The test server on ::1 only."""
    srv = TestServer(host="::1").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    server = DnsServer().start()
    try:
        yield server
    finally:
        server.stop()


def records(out: str) -> dict[str, dict]:  # type: ignore[type-arg]
    with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as handle:
        return {r["url"]: r for r in map(json.loads, handle)}


def test_an_ipv6_literal_url_is_fetched_and_named_safely(server6, setup, tmp_path, out) -> None:
    port = server6.server_address[1]
    urls = [server6.url("/files/a.jpg?size=700"), server6.url("/files/"), server6.url("/files/q.jpg?at=[::1]:1")]
    assert urls[0].startswith(f"http://[::1]:{port}/")
    assert main([write_list(tmp_path, urls), "-o", out, "-q", "--retries", "0", *setup]) == 0
    found = records(out)
    assert [found[url]["status"] for url in urls] == ["ok"] * 3
    for url in urls:
        path = found[url]["path"]
        # The address keeps its shape (cleaning alone gave "1_PORT", a host named "1"), inside the folder.
        assert path.startswith(f"ipv6_--1_{port}/") and ":" not in path and "[" not in path
        assert os.path.realpath(os.path.join(out, path)).startswith(os.path.realpath(out) + os.sep)
    with open(os.path.join(out, found[urls[0]]["path"]), "rb") as handle:
        assert handle.read() == body_for("a.jpg", 700)


def listening_on(host: str) -> Iterator[TestServer]:
    srv = TestServer(host=host).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(params=LISTEN, ids=["v4-listens", "v6-listens"])
def one_family(request: pytest.FixtureRequest) -> Iterator[TestServer]:
    """The test server on one of the two addresses the name has."""
    yield from listening_on(request.param)


def test_a_dual_stack_name_through_the_dns_cache_falls_back_to_the_address_that_answers(
        one_family, dns, setup, tmp_path, out) -> None:
    if one_family.host == "::1" and not ipv6_configured():
        pytest.skip("no IPv6 address beyond loopback here: the cache asks A only (as AI_ADDRCONFIG), "
                    "so a name served on ::1 alone is not reached")
    port = one_family.server_address[1]
    urls = [f"http://dual-{i}.fetcher-test:{port}/files/d{i}.bin?size=900" for i in range(2)]
    assert main([write_list(tmp_path, urls), "-o", out, "-q", "--retries", "0", "--dns-servers", dns.address,
                 *setup]) == 0
    assert [r["status"] for r in records(out).values()] == ["ok"] * 2
    assert all(dns.asked_once(f"dual-{i}.fetcher-test") for i in range(2)), dns.queries


def in_mount_namespace_with_hosts(hosts: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``argv`` with ``hosts`` (a file) bind-mounted over /etc/hosts, for it alone."""
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, hosts, *argv], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def private_hosts_work(tmp_path_factory: pytest.TempPathFactory) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for an /etc/hosts of the test's own")
    probe = tmp_path_factory.mktemp("probe") / "hosts"
    probe.write_text("127.0.0.1 probe.fetcher-hosts\n", encoding="ascii")
    done = in_mount_namespace_with_hosts(str(probe), ["getent", "hosts", "probe.fetcher-hosts"])
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount /etc/hosts in a mount namespace here (root needed): {done.stderr.strip()}")


def test_a_dual_stack_name_without_the_cache_falls_back_to_the_address_that_answers(
        private_hosts_work, one_family, setup, tmp_path, out) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 dual.fetcher-hosts\n::1 dual.fetcher-hosts\n", encoding="ascii")
    port = one_family.server_address[1]
    urls = [f"http://dual.fetcher-hosts:{port}/files/n{i}.bin?size=900" for i in range(2)]
    done = in_mount_namespace_with_hosts(str(hosts), [
        sys.executable, "-m", "fetcher", write_list(tmp_path, urls), "-o", out, "-q", "--retries", "0",
        "--no-dns-cache", *setup])
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in records(out).values()] == ["ok"] * 2
    assert sum(one_family.stats.requests.values()) == 2
