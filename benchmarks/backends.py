"""Measure every backend on many small files from the local test server: files/s and peak memory.

    python benchmarks/backends.py [--files 1000] [--size 10000] [--pools 8,64] [--repeat 5]
    python benchmarks/backends.py --delay 0.5 --pools 500 --backends thread,gevent   # slow hosts

The test server (tests/server.py) runs as its own process on 127.0.0.1, and
each run is ``python -m fetcher LIST --backend B --pool N`` in a fresh process,
as a user would start it. For each run it reports:

- wall files/s: files divided by the whole command's wall time (interpreter
  start, imports and worker start-up included);
- run files/s: the CLI summary's own rate (from reading the list to the end);
- peak RSS and peak PSS of the whole process tree (the CLI and every
  descendant: workers, forkserver, resource tracker), sampled from /proc
  every 50 ms in separate runs, because sampling dozens of processes costs
  CPU that would skew the rates on a small machine. RSS counts pages shared
  between processes once per process; PSS splits them, so it is the fairer
  total for forked workers.

Prints a Markdown table of medians and the load average (the rates mean
little on a busy machine). Asserts nothing. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_S = 0.05
VARIANTS = [("thread", None), ("process", None), ("process", "fork"), ("process", "spawn"), ("gevent", None)]


@dataclass
class Run:
    wall_s: float
    run_rate: float
    peak_rss: int  # bytes
    peak_pss: int
    peak_procs: int


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _tree(root: int) -> list[int]:
    children = _children_map()
    found, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; zeros if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line and not line[0].isdigit())
        return int(fields["Rss"].split()[0]) * 1024, int(fields["Pss"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, 0


def _sample(root: int, stop: threading.Event, peaks: dict[str, int]) -> None:
    while not stop.is_set():
        pids = _tree(root)
        rss = pss = 0
        for pid in pids:
            one_rss, one_pss = _memory(pid)
            rss, pss = rss + one_rss, pss + one_pss
        peaks["rss"] = max(peaks["rss"], rss)
        peaks["pss"] = max(peaks["pss"], pss)
        peaks["procs"] = max(peaks["procs"], len(pids))
        stop.wait(SAMPLE_S)


def run_once(list_path: str, backend: str, start_method: str | None, pool: int, files: int,
             sample: bool) -> Run:
    out = tempfile.mkdtemp(prefix="fetcher-bench-")
    env = dict(os.environ)
    env.pop("FETCHER_START_METHOD", None)
    if start_method:
        env["FETCHER_START_METHOD"] = start_method
    command = [sys.executable, "-m", "fetcher", list_path, "-o", out, "--backend", backend, "--pool", str(pool)]
    peaks = {"rss": 0, "pss": 0, "procs": 0}
    stop = threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = threading.Thread(target=_sample, args=(process.pid, stop, peaks), daemon=True)
    if sample:
        sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    stop.set()
    if sample:
        sampler.join()
    shutil.rmtree(out, ignore_errors=True)
    match = re.search(r"(\d+) ok, (\d+) failed.*? at ([0-9.]+) files/s", stdout)
    if process.returncode != 0 or match is None or int(match.group(1)) != files:
        raise SystemExit(f"{backend} pool {pool} failed (exit {process.returncode}):\n{stdout}\n{stderr}")
    return Run(wall, float(match.group(3)), peaks["rss"], peaks["pss"], peaks["procs"])


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def start_server() -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "server.py")],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, int(server.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10_000, help="bytes per file")
    parser.add_argument("--pools", default="8,64")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case")
    parser.add_argument("--memory-runs", type=int, default=1, help="sampled runs per case")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds the server waits before each response (slow hosts)")
    parser.add_argument("--backends", default="", help="comma-separated subset, e.g. thread,gevent")
    args = parser.parse_args()
    pools = [int(p) for p in args.pools.split(",")]
    chosen = set(args.backends.split(",")) if args.backends else None
    variants = [v for v in VARIANTS if chosen is None or v[0] in chosen]

    server, port = start_server()
    workdir = tempfile.mkdtemp(prefix="fetcher-bench-list-")
    list_path = os.path.join(workdir, "urls.txt")
    with open(list_path, "w", encoding="utf-8") as handle:
        for i in range(args.files):
            if args.delay:
                handle.write(f"http://127.0.0.1:{port}/slow/bench{i}.jpg?size={args.size}&delay={args.delay}\n")
            else:
                handle.write(f"http://127.0.0.1:{port}/files/bench{i}.jpg?size={args.size}\n")
    delay = f", each delayed {args.delay} s" if args.delay else ""
    print(f"{args.files} files of {args.size} bytes{delay} from tests/server.py (its own process); "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {args.repeat} timed and "
          f"{args.memory_runs} sampled runs; load average before: {_load()}\n")
    print("| backend | pool | wall s | wall files/s | run files/s | peak RSS (tree) | peak PSS (tree) | processes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for pool in pools:
            for backend, start_method in variants:
                runs = [run_once(list_path, backend, start_method, pool, args.files, sample=False)
                        for _ in range(args.repeat)]
                sampled = [run_once(list_path, backend, start_method, pool, args.files, sample=True)
                           for _ in range(args.memory_runs)]
                name = backend + (f" ({start_method})" if start_method else "")
                if backend == "process" and not start_method:
                    name += " (forkserver)"
                wall = statistics.median(r.wall_s for r in runs)
                print(f"| {name} | {pool} | {wall:.2f} | {args.files / wall:.0f} "
                      f"| {statistics.median(r.run_rate for r in runs):.0f} "
                      f"| {statistics.median(r.peak_rss for r in sampled) / 2**20:.0f} MiB "
                      f"| {statistics.median(r.peak_pss for r in sampled) / 2**20:.0f} MiB "
                      f"| {max(r.peak_procs for r in sampled)} |", flush=True)
        print(f"\nload average after: {_load()}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
