"""A retry that falls due while every slot is busy must not stop the run (issue 19).

The engine then asked the backend for results with a timeout of 0 over and over;
the process and multi backends returned at once without reading their pipes or
sockets, so the busy slots' results were never read and the run spun forever.
"""

from __future__ import annotations

import pytest
from conftest import NEEDS_PYCURL, write_list
from proc_helpers import Variant, read_manifest, run_cli

SETUPS = [Variant("process", flags=("--processes", "1")),
          pytest.param(Variant("process", flags=("--processes", "1", "--client", "curl")), marks=NEEDS_PYCURL),
          pytest.param(Variant("multi", flags=("--client", "curl")), marks=NEEDS_PYCURL)]


@pytest.mark.parametrize("variant", SETUPS, ids=lambda v: v.id if isinstance(v, Variant) else None)
def test_a_retry_due_while_the_pool_is_full(variant, server, tmp_path, out) -> None:
    limited = server.url("/flaky/w.jpg?fail=1&code=429&retry_after=0.5")
    slow = [server.url(f"/slow/s{i}.jpg?delay=1.5") for i in range(4)]
    done = run_cli(variant, [write_list(tmp_path, [limited, *slow]), "-o", out, "--pool", "2", "--per-host", "0", "-q"])
    assert done.returncode == 0, done.stderr
    records = {r["url"]: r for r in read_manifest(f"{out}/manifest.jsonl")}
    assert records[limited]["attempts"] == 2
    assert all(records[url]["status"] == "ok" for url in slow)
