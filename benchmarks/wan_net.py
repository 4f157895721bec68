"""The WAN benchmark's world: two network namespaces, a private CA, nginx, dnsmasq, the files.

Everything is made by ``World.__enter__`` and removed by ``__exit__``, which
runs on errors and Ctrl-C too: every process it started is stopped by PID, both
namespaces (and with them the veth pair) are deleted, and so are
``/etc/netns/<ns>/`` and the temp folder. Traffic never leaves the namespaces:
the clients reach 10.199.0.2 (the server namespace) over the veth, every name
resolves there, and nothing has a route anywhere else.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

CLIENT_NS, SERVER_NS = "f19wanc", "f19wans"
CLIENT_IP, SERVER_IP = "10.199.0.1", "10.199.0.2"
NGINX_PORT, DIRECT_PORT = 8443, 9443  # in the server ns: behind the relay (127.0.0.1), and on the veth
SLOW_HOSTS = (11, 31, 51, 71, 91)  # limit_rate 256k per connection
LIMITED_HOSTS = (13, 33, 53)  # a quarter of their answers are 429 with Retry-After: 1
MIN_SIZE, MAX_SIZE = 4 * 1024, 256 * 1024
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def host_name(index: int) -> str:
    return f"h{index:04d}.test"


@dataclass
class Files:
    """The dataset: (url, size) in a shuffled order, spread over ``hosts`` Zipf-like (weight 1/rank)."""

    urls: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.urls)


def make_files(root: str, count: int, hosts: int, seed: int = 19) -> Files:
    rng = random.Random(seed)
    weights = [1 / rank for rank in range(1, hosts + 1)]
    chosen = rng.choices(range(1, hosts + 1), weights=weights, k=count)
    block = rng.randbytes(MAX_SIZE)
    files = Files()
    for number, host in enumerate(chosen):
        # log-uniform 4-256 KiB: most images are small, a few are large
        size = int(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE))))
        folder = os.path.join(root, f"h{host:04d}")
        os.makedirs(folder, exist_ok=True)
        name = f"f{number:05d}.jpg"
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(JPEG_HEAD + block[len(JPEG_HEAD):size])
        files.urls.append((f"https://{host_name(host)}/h{host:04d}/{name}", size))
    return files


def make_ca(folder: str, hosts: int) -> tuple[str, str, str]:
    """A private CA and one server certificate naming every host: (ca.pem, cert.pem, key.pem)."""
    ca_key, ca, key, csr, cert = (os.path.join(folder, n) for n in ("ca.key", "ca.pem", "srv.key", "srv.csr",
                                                                     "srv.pem"))
    ext = os.path.join(folder, "san.ext")
    with open(ext, "w", encoding="utf-8") as handle:
        handle.write("subjectAltName=" + ",".join(f"DNS:{host_name(i)}" for i in range(1, hosts + 1)) + "\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=fetcher WAN CA"])
    run(["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=h0001.test"])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext])
    return ca, cert, key


NGINX_CONF = """worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    log_format conns '$connection $ssl_session_reused $server_protocol $status $msec $request_time $host';
    types {{ image/jpeg jpg; }}
    sendfile on; tcp_nopush on; keepalive_requests 100000; keepalive_timeout 120;
    open_file_cache max=30000 inactive=120s;
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_session_cache shared:SSL:20m; ssl_session_timeout 1h; ssl_session_tickets on;
    ssl_protocols TLSv1.2 TLSv1.3;
    map $host $rate {{ default 0; {slow} }}
    map $host $limited {{ default 0; {limited} }}
    split_clients "${{request_id}}" $coin {{ 25% 1; * 0; }}
    map "$limited$coin" $reject {{ "11" 1; default 0; }}
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        listen {server_ip}:{direct} ssl http2 backlog=4096;
        server_name ~^h[0-9]+\\.test$;
        root {data};
        access_log {tmp}/access.log conns;
        limit_rate $rate;
        location / {{
            if ($reject) {{ add_header Retry-After 1 always; return 429; }}
        }}
    }}
}}
"""


class World:
    """Namespaces, veth, CA, nginx, dnsmasq and the files; the relay is started per profile (wan.py)."""

    def __init__(self, count: int, hosts: int) -> None:
        self.count, self.hosts = count, hosts
        self.tmp = ""
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ns_made: list[str] = []

    def __enter__(self) -> World:
        try:
            self._setup()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _setup(self) -> None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.tmp = tempfile.mkdtemp(prefix="fetcher-wan-", dir=base)
        os.chmod(self.tmp, 0o755)  # nginx's workers (www-data) read the files
        self.data = os.path.join(self.tmp, "data")
        self._namespaces()
        self.ca, cert, key = make_ca(self.tmp, self.hosts)
        self.files = make_files(self.data, self.count, self.hosts)
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as handle:
            handle.write(NGINX_CONF.format(
                tmp=self.tmp, cert=cert, key=key, port=NGINX_PORT, direct=DIRECT_PORT, server_ip=SERVER_IP,
                data=self.data, slow=" ".join(f"{host_name(i)} 256k;" for i in SLOW_HOSTS),
                limited=" ".join(f"{host_name(i)} 1;" for i in LIMITED_HOSTS)))
        self.access_log = os.path.join(self.tmp, "access.log")
        self.dns_log = os.path.join(self.tmp, "dnsmasq.log")
        self.start(in_ns(SERVER_NS, ["nginx", "-c", conf, "-g", "daemon off;"]))
        self.start(in_ns(SERVER_NS, [
            "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--user=root", "--pid-file=",
            f"--listen-address={SERVER_IP}", "--bind-interfaces", f"--address=/test/{SERVER_IP}",
            "--local-ttl=300", "--log-queries", f"--log-facility={self.dns_log}"]))
        self._wait_for(lambda: os.path.exists(os.path.join(self.tmp, "nginx.pid")), "nginx")
        self._wait_for(lambda: os.path.exists(self.dns_log), "dnsmasq")

    def _namespaces(self) -> None:
        for ns in (SERVER_NS, CLIENT_NS):
            run(["ip", "netns", "add", ns])
            self.ns_made.append(ns)
        run(["ip", "link", "add", "f19c0", "netns", CLIENT_NS, "type", "veth", "peer", "name", "f19s0",
             "netns", SERVER_NS])
        for ns, dev, ip in ((CLIENT_NS, "f19c0", CLIENT_IP), (SERVER_NS, "f19s0", SERVER_IP)):
            run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # `ip netns exec` bind-mounts this over /etc/resolv.conf for the client's processes only.
        os.makedirs(f"/etc/netns/{CLIENT_NS}", exist_ok=True)
        with open(f"/etc/netns/{CLIENT_NS}/resolv.conf", "w", encoding="utf-8") as handle:
            handle.write(f"nameserver {SERVER_IP}\noptions attempts:2 timeout:2\n")

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, start_new_session=True,
                                   **kwargs)  # type: ignore[call-overload]
        self.processes.append(process)
        return process  # type: ignore[no-any-return]

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
        if process in self.processes:
            self.processes.remove(process)

    def _wait_for(self, condition: object, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start within {timeout} s")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        for process in list(reversed(self.processes)):
            self.stop(process)
        for ns in reversed(self.ns_made):
            run(["ip", "netns", "del", ns], check=False)  # takes the veth pair with it
        self.ns_made.clear()
        shutil.rmtree(f"/etc/netns/{CLIENT_NS}", ignore_errors=True)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
