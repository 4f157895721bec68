"""DNS queries per host: fetcher's run-wide resolver against each client resolving for itself.

Run as root from a checkout: ``python benchmarks/dns_queries.py [--hosts 100] [--urls-per-host 5]``.
It makes a network namespace of its own whose ``/etc/resolv.conf`` (``ip netns exec`` mounts
``/etc/netns/NAME/resolv.conf``) names a counting DNS server (tests/dns_server.py) on
127.0.0.1:53 inside it, serves files from tests/server.py there, runs each configuration
as ``python -m fetcher`` inside it, and prints the queries the server got per unique host.
Both are removed at the end. Nothing leaves the namespace.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["--backend multi --client curl", "--backend process --client curl --processes 4",
           "--backend process --client requests --processes 4", "--backend thread --client requests"]


NX_HOSTS = 10


def _counts(dns) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Queries so far for names that exist, and for names that do not."""
    with dns.lock:
        missing = sum(n for (name, _), n in dns.queries.items() if name.startswith("nx-"))
        return sum(dns.queries.values()) - missing, missing


def inside(hosts: int, per_host: int) -> None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from dns_server import DnsServer
    from server import TestServer

    dns, web = DnsServer(ttl=300, port=53).start(), TestServer(8080).start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            listing = os.path.join(folder, "urls.txt")
            with open(listing, "w", encoding="utf-8") as handle:
                for i in range(hosts * per_host):
                    handle.write(f"http://h{i % hosts:04d}.fetcher-test:8080/files/f{i}.bin?size=2000\n")
                for i in range(NX_HOSTS * per_host):  # names that do not exist (NXDOMAIN)
                    handle.write(f"http://nx-{i % NX_HOSTS:03d}.fetcher-test:8080/files/n{i}.bin\n")
            print(f"{hosts} hosts, {per_host} URLs each, and {NX_HOSTS} names that do not exist with as many "
                  "URLs; pool 32, --retries 3 (the default)")
            print("| configuration | DNS cache | exit | queries per host | queries per missing name |")
            print("|---|---|---|---|---|")
            for config in CONFIGS:
                for cache in ([], ["--no-dns-cache"]):
                    before = _counts(dns)
                    done = subprocess.run([sys.executable, "-m", "fetcher", listing, "-o",
                                           os.path.join(folder, f"out{len(config)}{len(cache)}"), "-q", "--pool",
                                           "32", *config.split(), *cache], cwd=ROOT, timeout=600)
                    found, missing = (now - then for now, then in zip(_counts(dns), before))
                    print(f"| {config} | {'off' if cache else 'on'} | {done.returncode} | {found / hosts:.2f} | "
                          f"{missing / NX_HOSTS:.2f} |", flush=True)
    finally:
        dns.stop()
        web.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--urls-per-host", type=int, default=5)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.hosts, args.urls_per_host)
        return 0
    if os.geteuid() != 0:
        print("dns_queries.py needs root (a network namespace)", file=sys.stderr)
        return 2
    name = f"fetcher-dns-{os.getpid()}"
    etc = f"/etc/netns/{name}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        os.makedirs(etc)
        with open(os.path.join(etc, "resolv.conf"), "w", encoding="ascii") as handle:
            handle.write("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        return subprocess.run(["ip", "netns", "exec", name, sys.executable, os.path.abspath(__file__), "--inside",
                               "--hosts", str(args.hosts), "--urls-per-host", str(args.urls_per_host)]).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name])
        if os.path.isdir(etc):
            os.remove(os.path.join(etc, "resolv.conf"))
            os.rmdir(etc)


if __name__ == "__main__":
    sys.exit(main())
