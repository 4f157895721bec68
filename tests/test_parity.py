"""Transport parity: every rule ends the same way on every backend x client pair.

Issue 19: with ``--client curl`` on the multi, process and gevent backends, a
server sending a byte a second was cut as "no data for 5 s" and retried, where
every other pair ran it to ``--max-time``. Each pair here runs the same cases
in two CLI runs (in subprocesses, so gevent's patching stays there): one with
the deadlines (a silent server: the read timeout; a byte a second: ``--max-time``),
one with everything else (``--min-speed``, size caps, retries, Retry-After,
redirects). The cases of a run go in parallel (one URL each), and all the runs
of all the pairs at once, so the module costs about one run's time.

For each case the error kind, the attempts, a word of the message and generous
bounds on the last attempt's time must match what the rule says (bounds catch a
rule that fires at the wrong moment, e.g. a retry, never measure speed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import HAVE_PYCURL
from proc_helpers import read_manifest
from server import TestServer

PAIRS = [("thread", "requests"), ("process", "requests"), ("gevent", "requests")]
if HAVE_PYCURL:
    PAIRS += [("thread", "curl"), ("process", "curl"), ("gevent", "curl"), ("multi", "curl")]
RUN_TIMEOUT_S = 120  # a hang guard for 14 parallel runs on a loaded machine, not a timing assertion

DEADLINES = ["--timeout", "2", "--max-time", "4", "--retries", "1", "--backoff", "0", "--pool", "4"]
RULES = ["--timeout", "5", "--min-speed", "50", "--min-speed-time", "1", "--max-size", "5000",
         "--max-redirects", "3", "--retries", "1", "--backoff", "0", "--pool", "16"]


@dataclass(frozen=True)
class Case:
    """One URL and how the rule must end it: kind None means the file was saved."""

    run: str  # "deadlines" or "rules": which flags
    path: str  # with {p}: the pair's id, so every pair has its own URLs
    kind: str | None
    attempts: int
    message: str = ""  # a word of the error message
    seconds: tuple[float, float] = (0.0, 30.0)  # bounds on the last attempt's elapsed_s


CASES = {
    "silence": Case("deadlines", "/slow/{p}-silent.bin?delay=20", "timeout", 2, "no data for 2 s", (1.5, 12)),
    "drip-never-silent": Case("deadlines", "/drip/{p}-drip.bin?size=1000&interval=1.5", "timeout", 1,
                                 "max-time 4", (3.5, 14)),
    "ok": Case("deadlines", "/files/{p}-ok.jpg?size=2000", None, 1),
    "stall-under-min-speed": Case("rules", "/drip/{p}-stall.bin?size=1000&interval=0.2", "timeout", 2,
                                  "min-speed", (0.8, 12)),
    "over-max-size": Case("rules", "/files/{p}-big.bin?size=20000", "too-large", 1),
    "over-max-size-chunked": Case("rules", "/chunked/{p}-bigc.bin?size=20000", "too-large", 1),
    "retried-503": Case("rules", "/flaky/{p}-f.jpg?fail=1", None, 2),
    "404-not-retried": Case("rules", "/status/404?p={p}", "http-status", 1),
    "retry-after": Case("rules", "/flaky/{p}-ra.jpg?fail=1&code=429&retry_after=1", None, 2),
    "redirect": Case("rules", "/redirect/{p}-r.jpg", None, 1),
    "redirect-loop": Case("rules", "/loop/{p}-l", "redirect", 1),
}


def pair_id(pair: tuple[str, str]) -> str:
    return "-".join(pair)


@dataclass
class Runs:
    server: TestServer
    records: dict[str, dict[str, dict]]  # pair id -> url -> manifest record
    failures: dict[str, str]  # pair id -> what went wrong with a run itself


def _start(server: TestServer, root: str, pair: tuple[str, str], run: str) -> subprocess.Popen[str]:
    pid = pair_id(pair)
    folder = os.path.join(root, f"{pid}-{run}")
    os.makedirs(folder)
    urls = [server.url(case.path.format(p=pid)) for case in CASES.values() if case.run == run]
    with open(os.path.join(folder, "urls.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(urls) + "\n")
    flags = DEADLINES if run == "deadlines" else RULES
    argv = [sys.executable, "-m", "fetcher", os.path.join(folder, "urls.txt"), "-o", os.path.join(folder, "out"),
            "-q", "--backend", pair[0], "--client", pair[1], *flags]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Every pair's two runs, all at once against one server."""
    root = str(tmp_path_factory.mktemp("parity"))
    server = TestServer().start()
    started = {(pair_id(pair), run): _start(server, root, pair, run) for pair in PAIRS for run in ("deadlines", "rules")}
    records: dict[str, dict[str, dict]] = {pair_id(pair): {} for pair in PAIRS}
    failures: dict[str, str] = {}
    try:
        for (pid, run), process in started.items():
            try:
                _, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                failures[pid] = f"the {run} run hung"
                continue
            manifest = os.path.join(root, f"{pid}-{run}", "out", "manifest.jsonl")
            if process.returncode not in (0, 1) or not os.path.exists(manifest):
                failures[pid] = f"the {run} run exited {process.returncode}: {stderr[-2000:]}"
                continue
            records[pid].update({r["url"]: r for r in read_manifest(manifest)})
        yield Runs(server, records, failures)
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        server.stop()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_every_rule_ends_alike_on_every_pair(runs: Runs, pair: tuple[str, str], name: str) -> None:
    pid, case = pair_id(pair), CASES[name]
    assert pid not in runs.failures, runs.failures.get(pid)
    record = runs.records[pid][runs.server.url(case.path.format(p=pid))]
    error = record["error"] or {}
    assert (error.get("kind"), record["attempts"]) == (case.kind, case.attempts), record
    assert case.message in error.get("message", ""), record
    low, high = case.seconds
    assert low <= record["elapsed_s"] <= high, record


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_retry_after_pauses_the_host_on_every_pair(runs: Runs, pair: tuple[str, str]) -> None:
    first, second = runs.server.stats.times[f"/flaky/{pair_id(pair)}-ra.jpg"][:2]
    assert second - first >= 0.9


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_a_redirect_records_its_final_url_on_every_pair(runs: Runs, pair: tuple[str, str]) -> None:
    pid = pair_id(pair)
    record = runs.records[pid][runs.server.url(CASES["redirect"].path.format(p=pid))]
    assert record["final_url"] == runs.server.url(f"/files/{pid}-r.jpg")
