"""Shared fixtures: a real HTTP server on 127.0.0.1 and a fresh output folder."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from server import TestServer  # noqa: E402


@pytest.fixture
def server() -> Iterator[TestServer]:
    """A TestServer on an ephemeral port, stopped after the test."""
    srv = TestServer().start()
    try:
        yield srv
    finally:
        srv.stop()


HAVE_PYCURL = importlib.util.find_spec("pycurl") is not None
NEEDS_PYCURL = pytest.mark.skipif(not HAVE_PYCURL,
                                   reason="pycurl is not installed: pip install -e '.[test]' (or '.[curl]')")
# Every transport (--client) the fetch-rule tests run on. pycurl is in the test extra, so CI
# runs both; a checkout installed without it skips the curl half and says why.
CLIENTS = ["requests", pytest.param("curl", marks=NEEDS_PYCURL)]
# ... and the ways to run them: (backend, client). The multi backend drives libcurl itself.
SETUPS = [pytest.param(("thread", "requests"), id="requests"),
          pytest.param(("thread", "curl"), id="curl", marks=NEEDS_PYCURL),
          pytest.param(("multi", "curl"), id="multi-curl", marks=NEEDS_PYCURL)]


@pytest.fixture(params=CLIENTS)
def client(request) -> str:
    """The ``--client`` a contract test runs on."""
    return request.param


@pytest.fixture(params=SETUPS)
def setup(request) -> list[str]:
    """CLI flags for each transport and backend that fetches differently: the rules must hold on all."""
    backend, client = request.param
    return ["--backend", backend, "--client", client]


@pytest.fixture
def out(tmp_path) -> str:
    return str(tmp_path / "out")


def write_list(tmp_path, lines: list[str] | bytes, name: str = "urls.txt") -> str:
    """Write a URL list file and return its path."""
    path = tmp_path / name
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)
