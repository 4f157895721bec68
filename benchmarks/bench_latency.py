"""The latency-bound scenario: every response is held back a fixed delay by delay_server.py.

A client keeping ``pool`` requests in flight can at best do ``pool / delay``
requests per second. Three rates are reported against that ceiling:

- mid-run: from the end of the first round to the start of the last, as the
  server saw it: the client's steady state, without the ramp-up of ``pool``
  connections or the tail of the last round (needs 3 rounds or more);
- server window: first request in → last response out, ramp-up and tail included;
- whole run: the client's wall time, interpreter start-up included.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from bench_tools import Job
from bench_data import Dataset, DatasetSpec
from bench_nginx import _die_with_parent

HERE = os.path.dirname(os.path.abspath(__file__))
READY_TIMEOUT_S = 10.0


class DelayServer:
    """delay_server.py in its own process (its own core), stopped by PID."""

    def __init__(self, python: str, delay: float, size: int, log_path: str) -> None:
        self.python, self.delay, self.size, self.log_path = python, delay, size, log_path
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        # Straight to 127.0.0.1: never through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [self.python, os.path.join(HERE, "delay_server.py"), "--delay", str(self.delay),
                "--size", str(self.size)]
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=log, preexec_fn=_die_with_parent)
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], READY_TIMEOUT_S)
        line = self._proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"delay server did not start (see {self.log_path})")
        self.port = int(line)

    def _get(self, path: str) -> dict[str, Any]:
        with self._opener.open(self.base_url + path, timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def reset(self) -> None:
        self._get("/_reset")

    def stats(self) -> dict[str, Any]:
        return self._get("/_stats")

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)


def latency_dataset(base_url: str, count: int, size: int, lists_dir: str, pool: int) -> Dataset:
    """A URL list of ``count`` distinct paths; the server makes up every body, nothing on disk.

    Also the list as ``curl --config`` files, one per curl process of the
    reference run (``curl_processes``), each holding an equal share.
    """
    spec = DatasetSpec(f"latency-{pool}", "d", count, size, size, "fixed")
    files = {f"d{i:06d}.bin": size for i in range(1, count + 1)}
    url_list = os.path.join(lists_dir, f"{spec.name}.txt")
    curl_config = os.path.join(lists_dir, f"{spec.name}.curl")
    processes = curl_processes(pool)
    configs = [open(f"{curl_config}.{k}", "w", encoding="ascii") for k in range(processes)]
    try:
        with open(url_list, "w", encoding="ascii") as handle:
            for i, name in enumerate(files):
                url = f"{base_url}/{spec.name}/{name}"
                handle.write(url + "\n")
                configs[i % processes].write(f'url = "{url}"\noutput = "{name}"\n')
    finally:
        for config in configs:
            config.close()
    return Dataset(spec, files, url_list, curl_config=curl_config)


CURL_PARALLEL_MAX = 300  # curl --parallel-max refuses more


def curl_processes(pool: int) -> int:
    """How many curl processes hold ``pool`` transfers between them."""
    return -(-pool // CURL_PARALLEL_MAX)


def curl_latency_job(binary: str) -> Job:
    """curl as the latency scenario's reference: enough processes for the pool, their shares in parallel.

    A run fails if any of them fails (the shell waits for each and keeps the worst code).
    """
    def command(dataset: Dataset, out: str, pool: int) -> list[str]:
        processes = curl_processes(pool)
        each = -(-pool // processes)
        script = " ".join(f'"$0" -q --parallel --parallel-max {each} --no-progress-meter --show-error --fail '
                          f'--config "$1.{k}" & p{k}=$!;' for k in range(processes))
        script += " rc=0;" + "".join(f" wait $p{k} || rc=$?;" for k in range(processes)) + " exit $rc"
        return ["sh", "-c", script, binary, dataset.curl_config]

    return Job("curl --parallel", command, is_reference=True, version_argv=(binary, "--version"))


def mid_run_rate(sent_s: Sequence[float], pool: int) -> float | None:
    """Responses per second between the end of the first round and the start of the last.

    ``sent_s``: when each response went out, in order. The first ``pool``
    responses close the first round (connections being opened, a burst of
    requests); the last ``pool`` are the final round, which ends as unevenly as
    the client's pace allows. What lies between is the steady state. None with
    fewer than 3 rounds.
    """
    count = len(sent_s)
    if pool <= 0 or count < 3 * pool:
        return None
    span = sent_s[count - pool - 1] - sent_s[pool - 1]
    return (count - 2 * pool) / span if span > 0 else None


def wait_idle(server: DelayServer, timeout_s: float = 10.0) -> None:
    """Wait until the previous client's connections are gone, so runs do not overlap."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        open_now = server.stats().get("open") or 0
        if int(open_now) <= 1:  # only our own stats connection
            return
        time.sleep(0.05)
    print("warning: delay server still has connections open from the last run", file=sys.stderr)
