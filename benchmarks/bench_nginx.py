"""nginx on 127.0.0.1, on a free port, with its own minimal config, stopped by PID.

Everything nginx writes (pid file, error log, temp paths) lives in the
benchmark's temp dir, so it neither needs nor touches /etc/nginx or /var/log.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import time

READY_TIMEOUT_S = 10.0
STOP_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1

CONFIG = """\
# Written by benchmarks/bench_nginx.py for one benchmark run.
# One worker: the machine has 2 cores and the client under test needs the other.
worker_processes {workers};
worker_rlimit_nofile 16384;
daemon off;              # stays our child, so we stop it by PID
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;   # never close a keep-alive connection mid-run
    open_file_cache max=20000 inactive=120s;  # the server must not be what is measured
    default_type application/octet-stream;
    types {{ }}
{temp_paths}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {web_root};
        location / {{ }}
    }}
}}
"""


def free_port() -> int:
    """A port free on 127.0.0.1 now (the race until nginx binds it is harmless here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the harness dies without cleaning up."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Nginx:
    """One nginx master (plus workers) serving ``web_root``."""

    def __init__(self, binary: str, web_root: str, root: str, workers: int = 1) -> None:
        self.binary, self.web_root, self.root, self.workers = binary, web_root, root, workers
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version(self) -> str:
        proc = subprocess.run([self.binary, "-v"], capture_output=True, text=True, timeout=30, check=False)
        return (proc.stderr or proc.stdout).strip().replace("nginx version: ", "")

    def _temp_paths(self) -> str:
        """Temp path directives for the modules this build has (nginx-light lacks some)."""
        built = subprocess.run([self.binary, "-V"], capture_output=True, text=True, timeout=30,
                               check=False).stderr
        lines = [f"    client_body_temp_path {self.root}/client_body;"]
        for module in ("proxy", "fastcgi", "uwsgi", "scgi"):
            if not re.search(rf"--without-http_{module}_module\b", built):
                lines.append(f"    {module}_temp_path {self.root}/{module};")
        return "\n".join(lines)

    def start(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        self.port = free_port()
        config = os.path.join(self.root, "nginx.conf")
        with open(config, "w", encoding="ascii") as handle:
            handle.write(CONFIG.format(workers=self.workers, root=self.root, port=self.port,
                                       web_root=self.web_root, temp_paths=self._temp_paths()))
        # -e: the startup error log too, or nginx first opens /var/log/nginx/error.log.
        argv = [self.binary, "-p", self.root, "-c", config, "-e", f"{self.root}/error.log"]
        # A file, not a pipe: a pipe nobody reads could fill and stall nginx.
        with open(os.path.join(self.root, "stderr.log"), "wb") as stderr:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=stderr, preexec_fn=_die_with_parent)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._proc.returncode}: "
                                   f"{self.error_log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on port {self.port} within {READY_TIMEOUT_S:.0f} s")

    def error_log_tail(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.root, name), encoding="utf-8", errors="replace") as handle:
                    text += handle.read()[-500:].strip() + " "
            except OSError:
                pass
        return text.strip()

    def pid(self) -> int | None:
        """The master's PID as nginx wrote it in its pid file, else the one we started."""
        try:
            with open(os.path.join(self.root, "nginx.pid"), encoding="ascii") as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return self._proc.pid if self._proc else None

    def stop(self) -> None:
        """Graceful stop (SIGQUIT), then SIGTERM, then SIGKILL; each bounded in time."""
        if self._proc is None or self._proc.poll() is not None:
            return
        pid = self.pid() or self._proc.pid
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            try:
                self._proc.wait(timeout=STOP_GRACE_S)
                break
            except subprocess.TimeoutExpired:
                continue
