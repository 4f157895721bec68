"""The WAN benchmark (issue 19): fetcher against curl, wget2, aria2c and img2dataset over an emulated WAN.

Run as root from a checkout (needs iproute2, openssl, nginx, dnsmasq; wget2,
aria2c and img2dataset are optional, a missing one is skipped and said so)::

    python benchmarks/wan.py --quick   # 2,000 files, a few minutes
    python benchmarks/wan.py           # 20,000 files over 500 hosts

World (wan_net.py): a client and a server network namespace joined by a veth
pair; in the server namespace nginx (HTTPS from a private CA, HTTP/1.1 and
HTTP/2, 500 names h0001.test ..., a few hosts slow, a few answering 429 with
Retry-After), dnsmasq (every name, TTL 300 s, each query logged) and the link:
a delaying relay (wan_relay.py) in front of nginx. Each profile restarts the
relay; the first, "relay only" (no delay, loss or cap) against "direct" (nginx
on the veth, no relay) shows what the relay itself costs. Every tool runs in the
client namespace, one at a time, into a fresh folder on /dev/shm.

Reported per tool: files/s, files saved (of the list), CPU ms per file (the
whole process tree, bench_measure.py), peak RSS, connections and full / resumed
TLS handshakes (nginx's log: $connection, $ssl_session_reused), HTTP/2's share
of requests, DNS queries (dnsmasq's log) and per unique host, the run's tail (seconds nginx took
to answer the last 1 % of requests: retries after a 429's Retry-After, slow hosts), and files/s
as a share of the limits:
pool ÷ RTT (each request costs at least one round trip) and the link's
bandwidth ÷ the mean file size. Ratios are against curl in the same profile.
``--rounds N`` runs every tool N times per profile, the order rotated each round, and
shows each tool's median run (one run's files/s moves by a quarter with the 429 hosts'
luck). Each run's stdout, stderr and (fetcher's) manifest are kept under ``--keep``, with
``lost.txt``: every URL of the list not saved, and what the manifest says of it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_measure import become_subreaper, run_measured  # noqa: E402
from bench_setup import load_average  # noqa: E402
from wan_net import CLIENT_NS, DIRECT_PORT, NGINX_PORT, SERVER_IP, SERVER_NS, World, in_ns  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RELAY = os.path.join(HERE, "wan_relay.py")  # wan_ab.py --relay swaps it
IMG2DATASET = os.environ.get("IMG2DATASET", "/work/img2ds/bin/img2dataset")  # its own venv (benchmarks/README.md)
_NAME = re.compile(r"^(f\d{5})")


@dataclass(frozen=True)
class Profile:
    label: str
    rtt_ms: float
    loss: float
    mbit: float
    direct: bool = False  # no relay: nginx on the veth


PROFILES = (Profile("direct (no relay)", 0, 0, 0, direct=True), Profile("relay only", 0, 0, 0),
            Profile("80 ms, 0.5% loss, 500 Mbit/s", 80, 0.005, 500),
            Profile("250 ms, 0.5% loss, 500 Mbit/s", 250, 0.005, 500))


@dataclass(frozen=True)
class Tool:
    label: str
    command: Callable[[str, str, int], list[str]]  # (url list, out folder, pool) -> argv
    binary: str


def tools(ca: str, curl_cfg: str, fetcher_configs: list[str], python: str) -> list[Tool]:
    found = []

    def fetcher(config: str) -> Tool:
        flags = config.split()
        # Leading NAME=value words are the environment (wan_ab.py's experiments): run through env(1).
        env = ["env", *[f for f in flags if re.match(r"^[A-Z_]+=", f)]]
        flags = [f for f in flags if not re.match(r"^[A-Z_]+=", f)]
        return Tool(f"fetcher {config or '(default)'}", lambda urls, out, pool: [
            *(env if len(env) > 1 else []), python, "-m", "fetcher", urls, "-o", out, "-q", "--pool", str(pool),
            "--per-host", str(pool), *flags], python)

    found.append(Tool("curl --parallel", lambda urls, out, pool: [
        "curl", "-q", "--parallel", "--parallel-max", str(min(pool, 300)), "--no-progress-meter", "--show-error",
        "--fail", "--cacert", ca, "--retry", "3", "--config", curl_cfg], "curl"))
    found.append(Tool("wget2", lambda urls, out, pool: [
        "wget2", "--no-config", "--quiet", "--progress=none", f"--max-threads={pool}", f"--ca-certificate={ca}",
        "--no-hsts", "--tries=4", "-P", out, "-i", urls], "wget2"))
    found.append(Tool("aria2c", lambda urls, out, pool: [
        "aria2c", "--no-conf", "--quiet=true", "-j", str(pool), "--dir", out, "-i", urls, f"--ca-certificate={ca}",
        "--file-allocation=none", "--auto-file-renaming=false", "--allow-overwrite=true", "--summary-interval=0",
        "--max-tries=4", "--retry-wait=1"], "aria2c"))
    found.append(Tool("img2dataset", lambda urls, out, pool: [
        IMG2DATASET, "--url_list", urls, "--input_format", "txt", "--output_folder", os.path.join(out, "d"), "--output_format", "files",
        "--processes_count", "2", "--thread_count", str(max(1, pool // 2)), "--disable_all_reencoding", "True",
        "--retries", "2", "--timeout", "30", "--number_sample_per_shard", "100000"], IMG2DATASET))
    found += [fetcher(config) for config in fetcher_configs]
    return [tool for tool in found if shutil.which(tool.binary) or os.path.exists(tool.binary)]


def count_saved(out: str, expected: dict[str, int]) -> int:
    """Files of the list present with the right size, whatever each tool names them."""
    return len(saved_keys(out, expected))


def saved_keys(out: str, expected: dict[str, int]) -> set[str]:
    """The keys (``f00042``) of the list's files present with the right size."""
    seen: set[str] = set()
    for folder, _dirs, names in os.walk(out):
        for name in names:
            match = _NAME.match(name) or _NAME.match(_img2dataset_source(folder, name))
            if match and match.group(1) in expected and match.group(1) not in seen:
                if os.path.getsize(os.path.join(folder, name)) == expected[match.group(1)]:
                    seen.add(match.group(1))
    return seen


def keep_run(folder: str, out: str, tmp: str, urls: list[str], saved: set[str]) -> int:
    """Keep what a run leaves for the hunt of a lost URL: its stdout and stderr, fetcher's manifest, and
    ``lost.txt``, each URL of the list not saved with the manifest's error for it. Returns how many."""
    os.makedirs(folder, exist_ok=True)
    for name in ("stdout", "stderr"):
        if os.path.exists(os.path.join(tmp, name)):
            shutil.copy(os.path.join(tmp, name), os.path.join(folder, name))
    errors: dict[str, str] = {}
    manifest = os.path.join(out, "manifest.jsonl")
    if os.path.exists(manifest):
        shutil.copy(manifest, os.path.join(folder, "manifest.jsonl"))
        with open(manifest, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                error = record.get("error") or {}
                errors[record["url"]] = f"{record['status']} {error.get('kind', '')}: {error.get('message', '')}"
    lost = [url for url in urls if url.rsplit("/", 1)[1][:6] not in saved]
    with open(os.path.join(folder, "lost.txt"), "w", encoding="utf-8") as handle:
        for url in lost:
            handle.write(f"{url}\t{errors.get(url, 'no record')}\n")
    return len(lost)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "default"


def _img2dataset_source(folder: str, name: str) -> str:
    """img2dataset saves 000000007.jpg beside 000000007.json, which holds the URL."""
    stem, ext = os.path.splitext(name)
    if ext != ".jpg" or not stem.isdigit():
        return ""
    try:
        with open(os.path.join(folder, stem + ".json"), encoding="utf-8") as handle:
            return str(json.load(handle).get("url", "")).rsplit("/", 1)[-1]
    except (OSError, ValueError):
        return ""


def log_from(path: str, offset: int) -> tuple[list[str], int]:
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    return data.decode("utf-8", "replace").splitlines(), offset + len(data)


def start_relay(world: World, profile: Profile) -> None:
    argv = [sys.executable, RELAY, "--listen", f"{SERVER_IP}:443",
            "--upstream", f"127.0.0.1:{NGINX_PORT}", "--rtt-ms", str(profile.rtt_ms), "--loss", str(profile.loss),
            "--mbit", str(profile.mbit)]
    world.relay = world.start(in_ns(SERVER_NS, argv), stdout=subprocess.PIPE)
    ready, _, _ = select.select([world.relay.stdout], [], [], 20)
    if not ready or b"ready" not in world.relay.stdout.readline():  # type: ignore[union-attr]
        raise RuntimeError("the relay did not start")


def measure(world: World, tool: Tool, profile: Profile, lists: dict[str, str], pool: int, timeout_s: float,
            expected: dict[str, int], mean_size: float, keep: str) -> list[str]:
    """One run of one tool: a row of the table; what it left is kept under ``keep`` (see keep_run)."""
    out = tempfile.mkdtemp(prefix="out-", dir=world.tmp)
    _, dns_at = log_from(world.dns_log, 0)
    _, log_at = log_from(world.access_log, 0)
    argv = tool.command(lists["txt"], out, pool)
    if profile.direct and tool.label.startswith("curl"):
        argv = [*argv, "--connect-to", f"::{SERVER_IP}:{DIRECT_PORT}"]
    env = dict(os.environ, REQUESTS_CA_BUNDLE=world.ca, CURL_CA_BUNDLE=world.ca, SSL_CERT_FILE=world.ca,
               NO_ALBUMENTATIONS_UPDATE="1")  # its start-up version check would go online
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    got = run_measured(in_ns(CLIENT_NS, argv), cwd=out, env=env, timeout_s=timeout_s,
                       stdout_path=os.path.join(world.tmp, "stdout"), stderr_path=os.path.join(world.tmp, "stderr"))
    kept = saved_keys(out, expected)
    saved = len(kept)
    keep_run(os.path.join(keep, slug(profile.label), slug(tool.label)), out, world.tmp,
             [url for url, _size in world.files.urls], kept)
    shutil.rmtree(out, ignore_errors=True)
    dns, _ = log_from(world.dns_log, dns_at)
    requests_log, _ = log_from(world.access_log, log_at)
    conns: dict[str, str] = {}
    h2 = 0
    for line in requests_log:
        parts = line.split()
        if len(parts) >= 3:
            conns.setdefault(parts[0], parts[1])
            h2 += parts[2] == "HTTP/2.0"
    resumed = sum(1 for mark in conns.values() if mark == "r")
    last = last_share_s(requests_log)
    hosts = len({url.split("/", 3)[2] for url, _size in world.files.urls})
    rate = saved / got.wall_s if got.wall_s else 0.0
    limits = []
    if profile.rtt_ms:
        limits.append(f"{100 * rate / (pool / (profile.rtt_ms / 1000)):.0f}%")
    else:
        limits.append("-")
    limits.append(f"{100 * rate * mean_size / (profile.mbit * 1e6 / 8):.0f}%" if profile.mbit else "-")
    note = "" if got.exit_code == 0 and not got.timed_out else (
        " (timed out)" if got.timed_out else f" (exit {got.exit_code})")
    return [tool.label + note, f"{rate:.0f}", f"{saved}/{len(expected)}", f"{1000 * got.cpu_s / max(saved, 1):.2f}",
            f"{got.peak_rss / 2**20:.0f}", str(len(conns)), f"{len(conns) - resumed}/{resumed}",
            f"{100 * h2 / max(len(requests_log), 1):.0f}%", per_host(sum("query[" in line for line in dns), hosts),
            "-" if last is None else f"{last:.2f}", *limits]


def last_share_s(lines: list[str], share: float = 0.01) -> float | None:
    """Seconds nginx took to answer the run's last ``share`` of requests (its log's ``$msec``, the
    fifth field): a run's tail, where retries after a Retry-After and slow hosts finish."""
    ends = sorted(float(parts[4]) for parts in (line.split() for line in lines) if len(parts) >= 5)
    if len(ends) < 2:
        return None
    return ends[-1] - ends[max(0, int(len(ends) * (1 - share)) - 1)]


def median_row(runs: list[list[str]]) -> list[str]:
    """The run with the median files/s (the lower one of an even count); every run's files/s in the
    label, and every run's lost URLs if one lost any (the median run alone would hide them).

    One run's files/s moves by a quarter with which URLs the 429 hosts happen to refuse
    three times in a row (a run's tail), so ``--rounds 3`` reports each tool's middle run.
    """
    ordered = sorted(runs, key=lambda row: float(row[1]))
    row = list(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        lost = [int(r[2].split("/")[1]) - int(r[2].split("/")[0]) for r in runs]
        spread = f"median of {len(runs)}: {', '.join(r[1] for r in runs)} files/s"
        row[0] += f" [{spread}; lost {', '.join(map(str, lost))}]" if any(lost) else f" [{spread}]"
    return row


def per_host(queries: int, hosts: int) -> str:
    """DNS queries, and per unique host of the list (fetcher's aim: 1; A and AAAA would be 2)."""
    return f"{queries} ({queries / max(hosts, 1):.2f}/host)"


HEADER = ["tool", "files/s", "saved", "CPU ms/file", "peak RSS MiB", "connections", "TLS full/resumed",
          "HTTP/2", "DNS queries", "last 1% s", "of pool/RTT", "of link"]


def with_ratios(rows: list[list[str]]) -> list[list[str]]:
    """files/s and CPU with curl's ratio in parentheses."""
    reference = next((list(row) for row in rows if row[0].startswith("curl")), None)
    if reference is None:
        return rows
    for row in rows:
        for column in (1, 3):
            base = float(reference[column]) or 1e-9
            row[column] = f"{row[column]} ({float(row[column]) / base:.2f}×)"
    return rows


def table(rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def write_lists(world: World) -> dict[str, str]:
    txt, cfg = os.path.join(world.tmp, "urls.txt"), os.path.join(world.tmp, "curl.cfg")
    with open(txt, "w", encoding="utf-8") as plain, open(cfg, "w", encoding="utf-8") as config:
        for url, _size in world.files.urls:
            plain.write(url + "\n")
            config.write(f'url = "{url}"\noutput = "{url.rsplit("/", 1)[1]}"\n')
    return {"txt": txt, "cfg": cfg}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 files: a few minutes")
    parser.add_argument("--files", type=int, help="files in the list (default 20,000; --quick 2,000)")
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--pool", type=int, default=256)
    parser.add_argument("--fetcher", action="append", help="a fetcher configuration (flags), repeatable")
    parser.add_argument("--timeout", type=float, default=0, help="per run, seconds (default 120; --quick 60)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tool per profile, the order "
                        "rotated each round; the table shows each tool's median run (default 1)")
    parser.add_argument("--save", help="also write the report to this file")
    parser.add_argument("--keep", default="wan-runs", help="folder for each run's stdout, stderr, manifest and "
                        "lost.txt (the URLs not saved, with their errors); default: ./wan-runs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("wan.py needs root (network namespaces)", file=sys.stderr)
        return 2
    count = args.files or (2000 if args.quick else 20000)
    timeout_s = args.timeout or (120 if args.quick else 300)
    configs = args.fetcher or ["", "--backend multi --client curl", "--backend process --client curl",
                               "--backend gevent --client curl"]
    become_subreaper()
    report = [f"WAN benchmark: {count} files over {args.hosts} hosts, pool {args.pool}, "
              f"load average {load_average():.2f} at the start"]
    with World(count, args.hosts) as world:
        lists = write_lists(world)
        expected = {url.rsplit("/", 1)[1][:6]: size for url, size in world.files.urls}
        mean = world.files.total_bytes / count
        report.append(f"mean file {mean / 1024:.0f} KiB, {world.files.total_bytes / 2**20:.0f} MiB in all")
        found = tools(world.ca, lists["cfg"], configs, sys.executable)
        for profile in PROFILES:
            if not profile.direct:
                start_relay(world, profile)
            chosen = [t for t in found if t.label.startswith("curl")] if profile.label.startswith(
                ("direct", "relay")) else found
            runs: dict[str, list[list[str]]] = {tool.label: [] for tool in chosen}
            for round_no in range(args.rounds):
                keep = args.keep if args.rounds == 1 else os.path.join(args.keep, f"round{round_no + 1}")
                for tool in chosen[round_no % len(chosen):] + chosen[:round_no % len(chosen)]:
                    print(f"[{profile.label}] {tool.label} ...", file=sys.stderr, flush=True)
                    runs[tool.label].append(measure(world, tool, profile, lists, args.pool, timeout_s, expected,
                                                    mean, keep))
                    print("   " + " | ".join(runs[tool.label][-1]), file=sys.stderr, flush=True)
            rows = [median_row(runs[tool.label]) for tool in chosen]
            if not profile.direct:
                world.stop(world.relay)
            report += ["", f"### {profile.label}", "", *table(with_ratios(rows))]
        report.append(f"\nload average {load_average():.2f} at the end; each run's stderr, manifest and lost "
                      f"URLs are in {os.path.abspath(args.keep)}")
    text = "\n".join(report) + "\n"
    print(text)
    if args.save:
        with open(args.save, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
