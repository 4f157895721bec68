"""Shared fixtures: a real HTTP server on 127.0.0.1 and a fresh output folder."""

from __future__ import annotations

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
