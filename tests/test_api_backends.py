"""The Python API's contract on every backend: streaming, a self-feeding generator, cancellation.

thread and process run in this process; gevent runs in a subprocess that
monkey-patches first, as a user's program must.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from fetcher import Fetcher, fetch

HERE = os.path.dirname(os.path.abspath(__file__))


def crawl_then_cancel(base: str, out: str, backend: str) -> str:
    """The contract, as a script: returns a line of facts the tests compare."""
    todo = [f"{base}/files/seed.jpg"]

    def crawl():
        while True:
            yield todo.pop() if todo else None

    seen = 0
    for result in fetch(crawl(), out=os.path.join(out, "a"), backend=backend, pool=3):
        assert result.ok, result
        seen += 1
        if seen < 8:
            todo.extend(f"{base}/files/{seen}-{k}.jpg" for k in range(2))
    with Fetcher(out=os.path.join(out, "b"), backend=backend, pool=2) as f:
        fast = f.submit(f"{base}/files/fast.jpg").result(timeout=30)
        slow = [f.submit(f"{base}/slow/s{i}.bin?delay=20") for i in range(2)]
        time.sleep(0.5)
        started = time.monotonic()
        f.cancel()
        cancel_s = time.monotonic() - started
    parts = [n for _, _, names in os.walk(out) for n in names if n.endswith(".part")]
    return f"results={seen} fast={fast.ok} cancelled={all(s.cancelled() for s in slow)} " \
           f"quick={cancel_s < 5} parts={len(parts)}"


EXPECTED = "results=15 fast=True cancelled=True quick=True parts=0"


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_api_contract_in_process(backend, server, tmp_path):
    assert crawl_then_cancel(server.base_url, str(tmp_path), backend) == EXPECTED


def test_api_contract_under_gevent(server, tmp_path):
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import sys
        sys.path.insert(0, {HERE!r})
        from test_api_backends import crawl_then_cancel
        print(crawl_then_cancel({server.base_url!r}, {str(tmp_path)!r}, "gevent"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == EXPECTED


def test_gevent_in_an_unpatched_process_is_refused_with_advice(tmp_path):
    from fetcher.errors import ConfigError

    with pytest.raises(ConfigError, match="monkey"):
        list(fetch(["http://127.0.0.1:9/x"], out=str(tmp_path), backend="gevent"))
