"""The journal commits through a lull: finished rows reach the disk while a slow URL is still running.

Before, the journal committed a batch only when a later result arrived, so through a
lull (one slow URL at the end of a list, for seconds or minutes) the last finished rows
stayed in an open transaction: a kill -9 then lost them, and the rerun had to find the
files again. Each test reads the journal from another connection (what a kill -9 leaves
is what is committed), kills the run with SIGKILL, and checks what the rerun requests.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from cluster import cluster_on, wait_until
from conftest import write_list
from proc_helpers import RUN_TIMEOUT_S

from fetcher.cli.main import main
from fetcher.run.journal import journal_path

SLOW_S = 120  # the lull: far longer than any wait below, so the slow URL is in flight throughout


def committed_states(out: str) -> dict[str, str]:
    """URL -> state as committed in ``out``'s journal (what survives a kill -9 of the writer now)."""
    path = journal_path(out)
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return dict(db.execute("SELECT url, state FROM urls").fetchall())
    except sqlite3.OperationalError:  # the schema not yet committed
        return {}
    finally:
        db.close()


def all_ok(out: str, urls: list[str]) -> bool:
    states = committed_states(out)
    return all(states.get(url) == "ok" for url in urls)


def test_a_lull_commits_the_finished_rows_before_a_kill_9(server, out, tmp_path):
    fast = [server.url(f"/files/f{i}.jpg?size=2000") for i in range(40)]
    slow = server.url(f"/slow/lull.jpg?delay={SLOW_S}")
    path = write_list(tmp_path, [*fast, slow])
    proc = subprocess.Popen([sys.executable, "-m", "fetcher", path, "-o", out, "-q", "--pool", "4"],
                            stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: all_ok(out, fast), timeout=30, what="the fast URLs committed during the lull")
        assert proc.poll() is None and server.stats.requests["/slow/lull.jpg"] == 1  # still in the lull
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=RUN_TIMEOUT_S)
    assert committed_states(out)[slow] == "pending"
    assert main([path, "-o", out, "-q", "--timeout", "0.3", "--retries", "0"]) == 1  # the slow one times out
    assert all(server.stats.requests[f"/files/f{i}.jpg"] == 1 for i in range(40))


@pytest.mark.parametrize("broker", ["manager", "redis"])
def test_serve_commits_through_a_lull_on_both_brokers(server, tmp_path, broker):
    fast = [server.url(f"/files/s{i}.jpg?size=2000") for i in range(40)]
    slow = server.url(f"/slow/serve-lull.jpg?delay={SLOW_S}")
    out = str(tmp_path / "srv")
    with cluster_on(broker, tmp_path) as cluster:
        srv = cluster.serve(write_list(tmp_path, [*fast, slow]), out, "--lease-timeout", "600")
        work = cluster.work(srv.address, str(tmp_path / "w"), "--pool", "4")
        wait_until(lambda: all_ok(out, fast), timeout=60, what="serve's journal committed during the lull")
        assert srv.proc.poll() is None and server.stats.requests["/slow/serve-lull.jpg"] == 1
        srv.kill()  # SIGKILL: what serve's journal holds is what it committed
        work.kill()
    assert committed_states(out)[slow] == "pending"


def test_an_idle_fetcher_commits_its_last_results(server, out):
    """A Fetcher left open with nothing to do (waiting for submissions) commits what it finished."""
    from fetcher.api import Fetcher

    urls = [server.url(f"/files/i{i}.jpg?size=2000") for i in range(20)]
    with Fetcher(out=out, pool=4) as fetcher:
        assert all(future.result(timeout=RUN_TIMEOUT_S).ok for future in [fetcher.submit(u) for u in urls])
        wait_until(lambda: all_ok(out, urls), timeout=30, what="an open, idle Fetcher's results committed")
