"""``fetcher serve`` and ``fetcher work`` as real subprocesses on 127.0.0.1, for the distributed tests.

Output goes to files, not pipes, so a chatty process can never block on a full
pipe; every wait is bounded; every process started is killed at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

KEY = "distributed-test-key-0123456789"


def free_port() -> int:
    """A port nothing listens on now (for a worker that must start before its server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP server that accepts connections and never says a word: a stalled network."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


def wait_until(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Proc:
    """One ``python -m fetcher ...`` process with its output in ``NAME.log``."""

    def __init__(self, name: str, args: list[str], folder: Path, env: dict[str, str | None] | None = None) -> None:
        self.name = name
        self.log_path = folder / f"{name}.log"
        environment = {**os.environ, "FETCHER_AUTHKEY": KEY}
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "fetcher", *args], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=folder, env=environment)

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        """The first line of output containing ``needle``."""
        def found() -> str | None:
            for line in self.text().splitlines():
                if needle in line:
                    return line
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode} before printing {needle!r}:\n"
                                     + self.text())
            return None

        return wait_until(found, timeout, f"{needle!r} from {self.name}")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout:g} s:\n{self.text()}") from None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class Cluster:
    """Starts servers and workers in one test's folder and kills what is left at teardown.

    With ``redis_url``, ``serve`` uses that Redis as its broker (``--broker``, queue ``queue``)
    and workers are pointed at it; else the manager broker on ``127.0.0.1:PORT``.
    """

    def __init__(self, folder: Path, redis_url: str | None = None, queue: str = "test") -> None:
        self.folder = folder
        self.redis_url = redis_url
        self.queue = queue
        self.procs: list[Proc] = []

    def serve(self, url_list: str, out: str, *extra: str, port: int = 0, name: str = "serve",
              env: dict[str, str | None] | None = None, wait: bool = True) -> Proc:
        if self.redis_url is not None:
            proc = self._start(name, ["serve", url_list, "--broker", self.redis_url, "--queue", self.queue,
                                      "-o", out, *extra], env)
            proc.address = self.redis_url  # type: ignore[attr-defined]
            if wait:
                proc.wait_for("serving through Redis")
            return proc
        proc = self._start(name, ["serve", url_list, "--bind", f"127.0.0.1:{port}", "-o", out, *extra], env)
        proc.address = f"127.0.0.1:{port}"  # type: ignore[attr-defined]
        if wait:
            line = proc.wait_for("listening on 127.0.0.1:")
            proc.address = "127.0.0.1:" + line.rsplit(":", 1)[1]  # type: ignore[attr-defined]
        return proc

    def work(self, address: str, out: str, *extra: str, name: str = "work",
             env: dict[str, str | None] | None = None) -> Proc:
        queue = ["--queue", self.queue] if "://" in address else []
        return self._start(name, ["work", address, "-o", out, *queue, *extra], env)

    def address(self, port: int) -> str:
        """Where workers reach a server that will listen on ``port`` (or this cluster's Redis)."""
        return self.redis_url or f"127.0.0.1:{port}"

    def stats(self, address: str) -> dict[str, Any]:
        """A running run's ``stats()``; {} if it cannot be reached right now."""
        from fetcher.distributed.brokers import worker_sessions
        from fetcher.errors import LinkError

        spec = broker_spec(address, self.queue)
        try:
            session = worker_sessions(spec)(5.0)
        except LinkError:
            return {}
        try:
            return session.stats()
        except LinkError:
            return {}
        finally:
            session.close()

    def wait_joined(self, address: str, count: int, timeout: float = 60.0) -> None:
        """Wait until ``count`` workers have joined the run at ``address`` (serve's own list)."""
        wait_until(lambda: len(self.stats(address).get("workers", [])) >= count, timeout,
                   f"{count} workers in the run")

    def _start(self, name: str, args: list[str], env: dict[str, str | None] | None) -> Proc:
        proc = Proc(name, args, self.folder, env)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


def broker_spec(address: str, queue: str = "test") -> Any:
    """The BrokerSpec of a test address: a Redis URL, or HOST:PORT with the tests' key."""
    from fetcher.distributed.broker import ManagerSpec, RedisSpec
    from fetcher.distributed.protocol import parse_address

    if "://" in address:
        return RedisSpec(address, queue)
    return ManagerSpec(parse_address(address), KEY.encode())


def manifest(out: str) -> dict[str, dict[str, Any]]:
    """The manifest by URL; fails if a URL has two records."""
    with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    by_url = {r["url"]: r for r in records}
    assert len(by_url) == len(records), "one record per URL"
    return by_url


@contextmanager
def cluster_on(broker: str, folder: Path) -> Iterator[Cluster]:
    """A Cluster on the manager broker, or on a redis-server of its own in ``folder``; both stopped after."""
    from redis_helper import RedisServer

    redis = RedisServer(folder / "redis").start() if broker == "redis" else None
    running = Cluster(folder, None if redis is None else redis.url)
    try:
        yield running
    finally:
        running.close()
        if redis is not None:
            redis.stop()
