#!/usr/bin/env python3
"""``afetch`` beside the CLI's default on the small-files set, in the same run (issue 28).

    python benchmarks/async_bench.py                 # 5,000 files of 4-64 KiB, pool 8, medians of 3
    python benchmarks/async_bench.py --files 1000 --reps 1

The small dataset of benchmarks/run.py (same seed, same sizes), served by a local
nginx (benchmarks/bench_nginx.py; installed with apt-get when missing and run as root).
Each run is a fresh process, as a user starts it, into a fresh folder:

- ``CLI default``: ``python -m fetcher LIST --pool N --per-host N -o OUT --quiet``
  (``--backend auto --client auto``: libcurl's multi on the engine's thread);
- ``afetch``: this script with ``--child``: ``asyncio.run`` of ``afetch(urls, pool=N,
  per_host=N)`` over the list, read lazily; ``afetch uvloop``: the same on uvloop.

Downloads go to ``--dir`` (default /dev/shm where it exists): on a disk shared with other
work, a run's syncfs writes back everyone's dirty pages and is charged to the run as system
time, which made CPU per file vary threefold between repetitions of one command.
Repetitions are interleaved (rep 1 of each, then rep 2...). Reported: files/s (files ÷
wall time from spawn to exit) and CPU ms per file (user+sys of the process tree from
``wait4``, interpreter start-up included), medians, with the load average before and
after: on a shared machine files/s moves with the load, CPU per file much less.
Every run is verified (every file there at its size). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_data import FULL_SPECS, build_dataset  # noqa: E402
from bench_measure import become_subreaper, run_measured  # noqa: E402
from bench_nginx import Nginx  # noqa: E402
from bench_setup import NGINX, Installer, git_describe, load_average  # noqa: E402
from bench_tools import tool_env, verify  # noqa: E402

RUN_TIMEOUT_S = 600.0


def child(url_list: str, out: str, pool: int, loop: str) -> int:
    """One afetch run over ``url_list`` into ``out``: exit 0 if every URL was saved."""
    from fetcher import afetch

    def urls():
        with open(url_list, encoding="ascii") as handle:
            for line in handle:
                yield line.strip()

    async def main() -> int:
        failed = 0
        async for result in afetch(urls(), out=out, pool=pool, per_host=pool):
            failed += not result.ok
        return failed

    if loop == "uvloop":
        import uvloop

        failed = uvloop.run(main())
    else:
        failed = asyncio.run(main())
    return 1 if failed else 0


def commands(url_list: str, pool: int) -> dict[str, list[str]]:
    me = [sys.executable, os.path.abspath(__file__), "--child", url_list, "--pool", str(pool)]
    return {
        "CLI default": [sys.executable, "-m", "fetcher", url_list, "--pool", str(pool), "--per-host", str(pool),
                        "--quiet", "-o"],
        "afetch": [*me, "--loop", "asyncio", "--out"],
        "afetch uvloop": [*me, "--loop", "uvloop", "--out"],
    }


def measure(args: argparse.Namespace, work: str) -> None:
    nginx_path, why = Installer(True).ensure(NGINX)
    if nginx_path is None:
        sys.exit(f"nginx is needed: {why}")
    spec = replace(FULL_SPECS[0], count=args.files)
    web_root, lists = os.path.join(work, "www"), os.path.join(work, "lists")
    os.makedirs(lists)
    nginx = Nginx(nginx_path, web_root, os.path.join(work, "nginx"))
    nginx.start()
    try:
        dataset = build_dataset(spec, web_root, lists, nginx.base_url)
        jobs = commands(dataset.url_list, args.pool)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in jobs}
        load_before = load_average()
        for rep in range(args.reps):
            for name, argv in jobs.items():
                out = os.path.join(args.dir or work, f"async-bench-out-{os.getpid()}-{rep}-{name.replace(' ', '-')}")
                m = run_measured([*argv, out], cwd=work, env=tool_env(), timeout_s=RUN_TIMEOUT_S,
                                 stdout_path=os.path.join(work, "stdout"), stderr_path=os.path.join(work, "stderr"))
                problem = verify(out, dataset, m.exit_code, m.timed_out, m.stderr_tail)
                shutil.rmtree(out, ignore_errors=True)
                if problem:
                    print(f"{name}: FAILED: {problem}", file=sys.stderr)
                    continue
                samples[name].append((spec.count / m.wall_s, 1000 * m.cpu_s / spec.count))
                print(f"rep {rep + 1} {name}: {spec.count / m.wall_s:.0f} files/s, "
                      f"{1000 * m.cpu_s / spec.count:.3f} ms CPU/file", file=sys.stderr)
        report(samples, spec.describe(), args, load_before, load_average())
    finally:
        nginx.stop()


def report(samples: dict[str, list[tuple[float, float]]], dataset: str, args: argparse.Namespace,
           load_before: float, load_after: float) -> None:
    print(f"small files ({dataset}) into {args.dir or 'a temp dir'}, pool {args.pool}, per-host {args.pool}, "
          f"medians of {args.reps}; "
          f"fetcher {git_describe(os.path.dirname(HERE))}; load average {load_before:.2f} before, "
          f"{load_after:.2f} after, {os.cpu_count()} CPUs\n")
    print("| run | files/s | CPU ms per file |")
    print("|---|--:|--:|")
    for name, runs in samples.items():
        if not runs:
            print(f"| {name} | FAILED | FAILED |")
            continue
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {rate:,.0f} | {cpu:.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=FULL_SPECS[0].count, help="files in the small set (5000)")
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where the runs download to (default /dev/shm: see above)")
    parser.add_argument("--child", metavar="URL_LIST", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.out, args.pool, args.loop)
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="async-bench-") as work:
        os.chmod(work, 0o755)  # nginx's workers run as an unprivileged user and must read www/
        measure(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
