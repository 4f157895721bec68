"""The wire, in one process: the manager server, the Link client, its deadlines and its errors."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from cluster import silent_server

from fetcher.distributed.manager.coordinator import Coordinator
from fetcher.distributed.protocol import EXPOSED, parse_address
from fetcher.distributed.manager.rpc import Link, RpcServer
from fetcher.errors import AuthError, LinkError
from fetcher.errors import ConfigError
from fetcher.distributed.protocol import RunRules
from fetcher.options import Options

KEY = b"test-key-0123456789abcdef"


def start(tmp_path, port: int = 0, key: bytes = KEY) -> RpcServer:
    coordinator = Coordinator(RunRules(Options.create(out=str(tmp_path)).worker_form()), "run", epoch=1)
    return RpcServer(coordinator, ("127.0.0.1", port), key, EXPOSED).start()


@pytest.fixture
def rpc(tmp_path) -> Iterator[RpcServer]:
    server = start(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def silent() -> Iterator[tuple[str, int]]:
    with silent_server() as address:
        yield address


def test_calls_reach_the_coordinator(rpc):
    link = Link(rpc.bound, KEY, timeout=5)
    try:
        assert link.call("stats")["run_id"] == "run"
        assert link.call("lease", "nobody", 5).seconds > 0  # Wait: nothing queued
    finally:
        link.close()


def test_only_exposed_methods_can_be_called(rpc):
    link = Link(rpc.bound, KEY, timeout=5)
    try:
        with pytest.raises(Exception, match="not in exposed"):
            link.call("offer", None)
    finally:
        link.close()


def test_a_wrong_key_is_an_auth_error_naming_the_authkey(rpc):
    with pytest.raises(AuthError, match="authkey") as caught:
        Link(rpc.bound, b"some-other-key-0123456789", timeout=5)
    assert isinstance(caught.value, ConfigError)  # the CLI's exit 2


def test_no_server_is_a_link_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()  # closed again: nothing listens there
    with pytest.raises(LinkError, match="no connection to the server"):
        Link(address, KEY, timeout=2)


def test_a_silent_server_fails_the_call_at_its_deadline(silent):
    started = time.monotonic()
    with pytest.raises(LinkError, match="did not answer within 0.3 s"):
        Link(silent, KEY, timeout=0.3)
    assert time.monotonic() - started < 10  # bounded: it does not hang


def test_a_new_link_works_after_the_server_restarts_on_the_same_port(tmp_path):
    server = start(tmp_path)
    address = server.bound
    link = Link(address, KEY, timeout=5)
    link.call("stats")
    server.stop()
    with pytest.raises(LinkError):
        link.call("stats")
    assert link.broken
    server = start(tmp_path, port=address[1])
    try:
        fresh = Link(address, KEY, timeout=5)  # no stale connection cache, unlike BaseManager proxies
        assert fresh.call("stats")["epoch"] == 1
        fresh.close()
    finally:
        server.stop()


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.5:9000", ("10.0.0.5", 9000)),
    ("server-host", ("server-host", 8001)),
    (":0", ("127.0.0.1", 0)),
    ("[::1]:7000", ("::1", 7000)),
])
def test_addresses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["host:port", "host:70000", "[::1]x"])
def test_bad_addresses(text):
    with pytest.raises(ConfigError):
        parse_address(text)


def test_a_client_that_never_answers_the_handshake_blocks_nobody(rpc):
    with socket.create_connection(rpc.bound, timeout=5):  # connected, silent: its handshake waits in its own thread
        link = Link(rpc.bound, KEY, timeout=5)
        try:
            assert link.call("stats")["run_id"] == "run"
        finally:
            link.close()


def test_a_server_stalled_mid_call_fails_the_call_at_its_deadline(tmp_path):
    """The handshake passed, then the server goes silent: poll() before recv() bounds the call."""
    coordinator = Coordinator(RunRules(Options.create(out=str(tmp_path)).worker_form()), "run", epoch=1)
    coordinator.stats = lambda: time.sleep(3) or {}  # type: ignore[method-assign]
    server = RpcServer(coordinator, ("127.0.0.1", 0), KEY, EXPOSED).start()
    try:
        link = Link(server.bound, KEY, timeout=0.3)
        with pytest.raises(LinkError, match="did not answer within 0.3 s"):
            link.call("stats")
        assert link.broken
    finally:
        server.stop()
