"""Interleaved A/B rounds on the WAN benchmark's world (issue 27): which change moves files/s.

A shared machine makes one run's files/s noise; the ratio of two tools run back to
back in the same round is much steadier. This builds wan.py's world once, then for
each chosen profile runs every configuration once per round, the order rotated each
round, and prints each run's row and, per configuration, the median of its per-round
ratio to the reference (the first tool given)::

    python benchmarks/wan_ab.py --rounds 3 --profile 80 --tool aria2c --tool curl \\
        --fetcher "" --fetcher "--http-version 1.1"

Tools are wan.py's (``curl``, ``aria2c``, ``wget2``) and fetcher configurations
(``--fetcher FLAGS``, repeatable; "" is the default). ``--relay PATH`` runs another
relay script (an older wan_relay.py, for an A/B of the link model itself).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wan  # noqa: E402
from bench_measure import become_subreaper  # noqa: E402
from bench_setup import load_average  # noqa: E402
from wan_net import World  # noqa: E402

PROFILES = {str(int(p.rtt_ms)): p for p in wan.PROFILES if p.rtt_ms}


CURL_TIMES = ("T %{url_effective} 0 %{time_namelookup} %{time_connect} %{time_appconnect} "
              "%{time_pretransfer} %{time_starttransfer} %{time_total} %{num_connects} %{size_download}\\n")


def cpu_of(pid: int) -> float:
    """user + sys seconds of one process so far (the relay: is it the bottleneck?)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timeline(lines: list[str]) -> str:
    """When nginx answered the run's requests (its log: ``$msec $request_time $host`` after the first
    four fields): the share done by each time since the first request, and the biggest host's tail."""
    rows = [(float(p[4]) - float(p[5]), float(p[4]), p[6], p[0]) for p in (line.split() for line in lines)
            if len(p) >= 7]
    if not rows:
        return "no timeline (an older nginx log format)"
    t0 = min(start for start, _, _, _ in rows)
    ends = sorted(end - t0 for _, end, _, _ in rows)
    top = max({host for _, _, host, _ in rows}, key=lambda h: sum(1 for r in rows if r[2] == h))
    mine = [r for r in rows if r[2] == top]
    marks = ", ".join(f"{q}% {ends[min(len(ends) - 1, len(ends) * q // 100)]:.2f}s" for q in (25, 50, 90, 99, 100))
    per_conn: dict[str, int] = {}
    for row in rows:
        per_conn[row[3]] = per_conn.get(row[3], 0) + 1
    return (f"{len(rows)} requests answered: {marks}; {top}: {len(mine)} requests on "
            f"{len({r[3] for r in mine})} connections, its last at {max(r[1] for r in mine) - t0:.2f}s; "
            f"connections carrying 1 request: {sum(1 for n in per_conn.values() if n == 1)} of {len(per_conn)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="append", choices=sorted(PROFILES), help="RTT in ms, repeatable")
    parser.add_argument("--tool", action="append", default=[], help="curl, aria2c or wget2, repeatable")
    parser.add_argument("--fetcher", action="append", default=[], help="a fetcher configuration, repeatable")
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--pool", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--relay", help="another relay script (default: wan_relay.py)")
    parser.add_argument("--keep", default="wan-ab-runs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("wan_ab.py needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.relay:
        wan.RELAY = os.path.abspath(args.relay)
    become_subreaper()
    print(f"load average {load_average():.2f} at the start", flush=True)
    with World(args.files, args.hosts) as world:
        lists = wan.write_lists(world)
        expected = {url.rsplit("/", 1)[1][:6]: size for url, size in world.files.urls}
        mean = world.files.total_bytes / args.files
        found = wan.tools(world.ca, lists["cfg"], args.fetcher, sys.executable)
        chosen = [t for name in args.tool for t in found if t.label.split()[0] == name]
        if "curl-w" in args.tool:  # curl with each transfer's timings on stdout (kept with the run)
            curl = next(t for t in found if t.label.startswith("curl"))
            chosen.append(wan.Tool("curl -w", lambda urls, out, pool, c=curl: [*c.command(urls, out, pool), "-w",
                                   CURL_TIMES], "curl"))
        chosen += [t for t in found if t.label.startswith("fetcher")]
        for key in args.profile or ["80"]:
            profile = PROFILES[key]
            wan.start_relay(world, profile)
            rates: dict[str, list[float]] = {t.label: [] for t in chosen}
            for round_no in range(args.rounds):
                order = chosen[round_no % len(chosen):] + chosen[:round_no % len(chosen)]
                for tool in order:
                    keep = os.path.join(args.keep, f"r{round_no}")
                    relay_cpu = cpu_of(world.relay.pid)
                    _, log_at = wan.log_from(world.access_log, 0)
                    began = time.time()
                    row = wan.measure(world, tool, profile, lists, args.pool, args.timeout, expected, mean, keep)
                    relay_cpu = cpu_of(world.relay.pid) - relay_cpu
                    rates[tool.label].append(float(row[1]))
                    wall = max(int(row[2].split("/")[0]) / max(float(row[1]), 1e-9), 1e-3)
                    print(f"[{key} ms r{round_no} load {load_average():.1f}] " + " | ".join(row)
                          + f" | relay CPU {100 * relay_cpu / wall:.0f}% | began {began:.3f}", flush=True)
                    print("    " + timeline(wan.log_from(world.access_log, log_at)[0]), flush=True)
            world.stop(world.relay)
            reference = chosen[0].label
            print(f"\n{profile.label}: median files/s, and median per-round ratio to {reference}")
            for tool in chosen:
                ratios = [a / b for a, b in zip(rates[tool.label], rates[reference]) if b]
                print(f"  {tool.label:50s} {statistics.median(rates[tool.label]):7.0f}  "
                      f"{statistics.median(ratios):.2f}x  (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"load average {load_average():.2f} at the end", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
