#!/usr/bin/env python3
"""Benchmark fetcher against curl --parallel, wget2 and aria2c on a local nginx (issue 8).

    python benchmarks/run.py            # full run: medians of 3, ~10 minutes
    python benchmarks/run.py --quick    # smaller datasets, 1 repetition, < 2 minutes

Sets everything up itself: installs nginx (and curl, wget2, aria2 where it can)
with apt-get when run as root, generates the datasets in a temp dir, serves them
from nginx on 127.0.0.1, downloads every list with every tool into a freshly
made filesystem, verifies each run, and prints Markdown tables of medians with
each figure's ratio to curl measured in the same run. Progress goes to stderr,
the report to stdout. Standard library only. Never asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from bench_data import FULL_SPECS, MIB, QUICK_SPECS, Dataset, DatasetSpec, build_dataset, draw_sizes
from bench_fs import FreshFilesystems, image_dir
from bench_latency import (DelayServer, curl_latency_job, curl_processes, latency_dataset, mid_run_rate,
                           wait_idle)
from bench_measure import Measurement, become_subreaper, run_measured
from bench_nginx import Nginx
from bench_report import Cell, LatencyCell, LatencySample, Sample, latency_table, main_table
from bench_setup import (ARIA2C, CURL, NGINX, WGET2, Installer, available_memory, first_line, git_describe,
                         load_average, machine_lines, prefault_memory)
from bench_tools import (FETCHER_CONFIGS, FetcherConfig, Job, aria2c_job, curl_job, fetcher_job,
                         tool_env, verify, wget2_job)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROBE_TIMEOUT_S = 120.0
LATENCY_CONFIGS = ("gevent", "gevent --client curl", "multi --client curl")
EXIT_USAGE = 2  # what fetcher answers to a backend or flag it does not know


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smaller datasets, 1 repetition, 5 latency rounds: under 2 minutes")
    parser.add_argument("--reps", type=int, help="repetitions per configuration (default 3, --quick 1)")
    parser.add_argument("--pool", default="8", help="comma-separated pool sizes for every tool (default 8)")
    parser.add_argument("--fetcher", action="append", metavar="'BACKEND [ARGS]'",
                        help="a fetcher configuration, repeatable, e.g. 'thread' or 'thread --client curl' "
                             f"(default: {', '.join(c.label[8:] for c in FETCHER_CONFIGS)})")
    parser.add_argument("--durability", metavar="LEVELS",
                        help="comma-separated --durability levels (e.g. batch,full,none): every fetcher "
                             "configuration runs once per level, in the same run (default: fetcher's default only)")
    parser.add_argument("--tools", default="curl,wget2,aria2c",
                        help="reference tools to run where installed (default curl,wget2,aria2c; '' for none)")
    parser.add_argument("--datasets", default="small,large,mixed", help="which datasets (default all)")
    parser.add_argument("--latency-backend", action="append", metavar="'BACKEND [ARGS]'",
                        help="a fetcher configuration for the latency-bound scenario, repeatable "
                             f"(default: {', '.join(LATENCY_CONFIGS)})")
    parser.add_argument("--latency-pools", default="100,1000", help="pools for it (default 100,1000)")
    parser.add_argument("--latency-delay", type=float, default=0.2, help="server delay in s (default 0.2)")
    parser.add_argument("--latency-rounds", type=int,
                        help="URLs per run = rounds × pool (default 10, --quick 5)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency-bound scenario")
    parser.add_argument("--nginx-workers", default="1",
                        help="nginx worker_processes (default 1: the client needs the other core)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs fetcher (default: this one); it needs fetcher's "
                             "dependencies, the code itself comes from --repo")
    parser.add_argument("--repo", default=REPO,
                        help="the fetcher checkout to measure (default: the one this script is in), "
                             "e.g. another branch's worktree for a before/after comparison")
    parser.add_argument("--run-timeout", type=float, default=300, help="kill a run after this many s")
    parser.add_argument("--no-install", action="store_true", help="never call apt-get")
    parser.add_argument("--no-prefault", action="store_true",
                        help="do not touch the working set of RAM before measuring (see bench_setup.py)")
    parser.add_argument("--fs", choices=("auto", "ext4", "tmpfs", "plain"), default="auto",
                        help="where downloads go: a fresh ext4 loop image per run, else tmpfs, else a "
                             "plain directory (default auto: the first that works)")
    parser.add_argument("--workdir", help="parent folder of the temp dir (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (datasets, logs)")
    parser.add_argument("--save", metavar="FILE", help="also write the report to FILE")
    args = parser.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 3)
    args.latency_backends = args.latency_backend or list(LATENCY_CONFIGS)
    args.latency_rounds = args.latency_rounds or (5 if args.quick else 10)
    args.pools = _int_list(parser, "--pool", args.pool)
    args.latency_pool_list = _int_list(parser, "--latency-pools", args.latency_pools)
    return args


def _int_list(parser: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        parser.error(f"{flag} takes comma-separated whole numbers, not {text!r}")
    if not values or min(values) < 1:
        parser.error(f"{flag} needs at least one number ≥ 1")
    return values


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so every finally block (nginx, mounts, temp dir) runs


def raise_nofile_limit() -> int:
    """Soft RLIMIT_NOFILE to the hard limit; inherited by every tool (a pool of 1,000 needs it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Bench:
    """What every run needs: where to write, how to launch fetcher, the environment."""

    args: argparse.Namespace
    workdir: str
    filesystems: FreshFilesystems
    launcher: list[str]
    env: dict[str, str]
    run_counter: int = 0

    def measure(self, job: Job, dataset: Dataset, pool: int, tag: str) -> tuple[Measurement, str | None]:
        """One run into a fresh filesystem: its measurement and None, or why it failed."""
        self.run_counter += 1
        logs = os.path.join(self.workdir, "logs", f"{self.run_counter:04d}-{tag}")
        with self.filesystems.fresh(dataset.total_bytes, dataset.count) as out:
            argv = job.command(dataset, out, pool)
            measurement = run_measured(argv, cwd=out, env=self.env, timeout_s=self.args.run_timeout,
                                       stdout_path=logs + ".out", stderr_path=logs + ".err")
            failure = verify(out, dataset, measurement.exit_code, measurement.timed_out,
                             measurement.stderr_tail)
        return measurement, failure


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)[:40]


def probe_fetcher(bench: Bench, config: FetcherConfig, url: str) -> str | None:
    """None if fetcher runs this configuration, else why it is skipped (exit 2: it rejects it)."""
    probe_dir = tempfile.mkdtemp(prefix="probe-", dir=bench.workdir)
    url_list = os.path.join(probe_dir, "urls.txt")
    with open(url_list, "w", encoding="ascii") as handle:
        handle.write(url + "\n")
    # Not --quiet: if the probe fails, its message is the reason printed.
    argv = [*bench.launcher, url_list, *config.args, "--pool", "1", "-o", os.path.join(probe_dir, "out")]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=bench.env, cwd=probe_dir,
                              timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"a one-URL probe run did not finish in {PROBE_TIMEOUT_S:.0f} s"
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if proc.returncode == 0:
        return None
    lines = [line for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "(no message)"
    if proc.returncode == EXIT_USAGE:
        return f"fetcher rejects it: {last}"
    return f"a one-URL probe run failed (exit {proc.returncode}): {last}"


def reference_jobs(args: argparse.Namespace, installer: Installer) -> tuple[list[Job], list[str]]:
    """curl, wget2 and aria2c jobs for the tools that are (or could be made) available."""
    makers = {"curl": (CURL, curl_job), "wget2": (WGET2, wget2_job), "aria2c": (ARIA2C, aria2c_job)}
    jobs, skipped = [], []
    for name in [part.strip() for part in args.tools.split(",") if part.strip()]:
        if name not in makers:
            skipped.append(f"{name}: unknown tool (choose from {', '.join(makers)})")
            continue
        package, make = makers[name]
        path, why = installer.ensure(package)
        if path:
            jobs.append(make(path))
        else:
            skipped.append(f"{name}: {why}")
    return jobs, skipped


LIBS_SNIPPET = """
import importlib.metadata as m
found = []
for name in ("requests", "urllib3", "gevent", "pycurl"):
    try:
        found.append(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        pass
print(", ".join(found) or "none")
"""


def tool_versions(bench: Bench, jobs: Sequence[Job], nginx: Nginx) -> list[str]:
    versions = {
        "python": first_line([bench.args.python, "--version"]),
        "fetcher": first_line([*bench.launcher, "--version"], env=bench.env)
        + f" from {bench.args.repo} (commit {git_describe(bench.args.repo)})",
        "python libs": first_line([bench.args.python, "-c", LIBS_SNIPPET], env=bench.env),
        "nginx": f"{nginx.version()} ({bench.args.nginx_workers} worker)",
    }
    for job in jobs:
        if job.version_argv:
            versions[job.label.split()[0]] = first_line(list(job.version_argv))
    return [f"{name + ':':<12} {text}" for name, text in versions.items()]


def run_matrix(bench: Bench, datasets: Sequence[Dataset], jobs: Sequence[Job]) -> list[Cell]:
    """Every job on every dataset and pool, repetitions interleaved so drift hits all alike."""
    cells = {(d.name, pool, job.label): Cell(d.name, d.spec.describe(), pool, job.label, job.is_reference)
             for d in datasets for pool in bench.args.pools for job in jobs}
    for rep in range(1, bench.args.reps + 1):
        for dataset in datasets:
            for pool in bench.args.pools:
                for job in jobs:
                    cell = cells[(dataset.name, pool, job.label)]
                    if cell.failure is not None:
                        continue  # a configuration that failed once is reported failed, not re-timed
                    tag = f"{dataset.name}-{pool}-{_slug(job.label)}-r{rep}"
                    measurement, failure = bench.measure(job, dataset, pool, tag)
                    _log_run(rep, bench.args.reps, dataset, pool, job.label, measurement, failure)
                    if failure is not None:
                        cell.failure = failure
                    else:
                        cell.samples.append(Sample(measurement, dataset.count, dataset.total_bytes))
    return list(cells.values())


def _log_run(rep: int, reps: int, dataset: Dataset, pool: int, label: str,
             m: Measurement, failure: str | None) -> None:
    outcome = f"FAILED: {failure}" if failure else (
        f"{dataset.count / m.wall_s:8,.0f} files/s  {dataset.total_bytes / 2**20 / m.wall_s:7,.0f} MiB/s"
        f"  cpu {m.cpu_s:6.2f} s (sys {m.sys_s:5.2f})  rss {m.peak_rss / 2**20:6.0f} MiB")
    log(f"[{rep}/{reps}] {dataset.name:<6} pool {pool:<4} {label:<24} {m.wall_s:7.2f} s  {outcome}")


def warm_up(bench: Bench, datasets: Sequence[Dataset], jobs: Sequence[Job]) -> None:
    """One untimed pass per dataset, so the first timed tool does not pay for cold caches."""
    job = next((j for j in jobs if j.is_reference), jobs[0] if jobs else None)
    if job is None:
        return
    for dataset in datasets:
        measurement, failure = bench.measure(job, dataset, bench.args.pools[0], f"warmup-{dataset.name}")
        log(f"[warm-up] {dataset.name:<6} {job.label}: {measurement.wall_s:.2f} s"
            + (f"  FAILED: {failure}" if failure else ""))


def warm_memory(specs: Sequence[DatasetSpec]) -> None:
    """Touch the benchmark's working set of RAM once, so no timed run pays first-touch costs."""
    sizes = [sum(draw_sizes(spec)) for spec in specs]
    # The datasets stay in the page cache; one run adds its files' page cache plus the image
    # holding them (on /dev/shm); half again for slack.
    working_set = sum(sizes) + 2 * max(sizes, default=0)
    nbytes = min(int(working_set * 1.5) + 512 * MIB, available_memory() // 2)
    seconds = prefault_memory(nbytes)
    log(f"touched {nbytes / 2**30:.1f} GiB of RAM in {seconds:.1f} s (first-touch costs paid up front)")


def run_latency(bench: Bench, stack: contextlib.ExitStack, lists_dir: str,
                curl: str | None) -> list[LatencyCell]:
    """The latency-bound scenario: one cell per configuration and pool, skipped if fetcher lacks it.

    With ``curl``, curl runs it too (as many processes as its parallel cap needs): what a
    C client reaches against the same server on the same machine, the scenario's real ceiling.
    """
    args = bench.args
    size = 64
    server = DelayServer(args.python, args.latency_delay, size, os.path.join(bench.workdir, "delay.log"))
    server.start()
    stack.callback(server.stop)
    runs: list[tuple[Job, LatencyCell]] = []
    if curl is not None:
        job = curl_latency_job(curl)
        runs += [(job, LatencyCell(f"curl --parallel (×{curl_processes(pool)})", pool, args.latency_delay))
                 for pool in args.latency_pool_list]
    for spec in args.latency_backends:
        config = FetcherConfig.parse(spec)
        cells = [LatencyCell(config.label, pool, args.latency_delay) for pool in args.latency_pool_list]
        why = probe_fetcher(bench, config, f"{server.base_url}/probe/p.bin")
        if why is not None:
            for cell in cells:
                cell.skipped = why
            log(f"latency scenario skipped: {config.label}: {why}")
        job = fetcher_job(config, bench.launcher)
        runs += [(job, cell) for cell in cells]
    for rep in range(1, args.reps + 1):  # interleaved, like the main table
        for job, cell in runs:
            if cell.failure is not None or cell.skipped:
                continue
            dataset = latency_dataset(server.base_url, cell.pool * args.latency_rounds, size, lists_dir,
                                      cell.pool)
            wait_idle(server)
            server.reset()
            measurement, failure = bench.measure(job, dataset, cell.pool, f"latency-{cell.pool}-r{rep}")
            stats = server.stats()
            window = float(stats.get("window_s") or 0.0)
            mid = mid_run_rate(stats.get("sent_s") or [], cell.pool)
            log(f"[{rep}/{args.reps}] latency pool {cell.pool:<5} {cell.label:<16} "
                f"{measurement.wall_s:6.2f} s  server window {window:5.2f} s  "
                + (f"mid-run {mid / (cell.pool / args.latency_delay):4.0%}  " if mid else "")
                + f"max open {stats.get('max_open')}  rss {measurement.peak_rss / 2**20:5.0f} MiB"
                + (f"  FAILED: {failure}" if failure else ""))
            if failure is not None:
                cell.failure = failure
                continue
            cell.samples.append(LatencySample(measurement, dataset.count, window,
                                              int(stats.get("max_open") or 0), mid))
    return [cell for _, cell in runs]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    nofile = raise_nofile_limit()
    if not become_subreaper():
        log("note: cannot become a child subreaper: CPU of orphaned tool processes may go uncounted")
    started = time.monotonic()
    installer = Installer(allowed=not args.no_install)
    nginx_binary, why = installer.ensure(NGINX)
    if nginx_binary is None:
        log(f"error: nginx is required and missing: {why}")
        return 2
    if os.geteuid() != 0:
        log("note: not root, so no fresh filesystem can be mounted per run (see the warning below)")
    workdir = tempfile.mkdtemp(prefix="fetcher-bench-", dir=args.workdir)
    os.chmod(workdir, 0o755)  # nginx's workers run as an unprivileged user and must read www/
    try:
        with contextlib.ExitStack() as stack:
            return _run(args, installer, nginx_binary, workdir, stack, nofile, started)
    except KeyboardInterrupt:
        log("interrupted: nginx, servers and mounts stopped, temp files removed")
        return 130
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, installer: Installer, nginx_binary: str, workdir: str,
         stack: contextlib.ExitStack, nofile: int, started: float) -> int:
    references, skipped = reference_jobs(args, installer)
    web_root, lists_dir = os.path.join(workdir, "www"), os.path.join(workdir, "lists")
    for folder in (web_root, lists_dir, os.path.join(workdir, "logs")):
        os.makedirs(folder)

    nginx = Nginx(nginx_binary, web_root, os.path.join(workdir, "nginx"), workers=args.nginx_workers)
    nginx.start()
    stack.callback(nginx.stop)
    log(f"nginx serving {web_root} on {nginx.base_url} (pid {nginx.pid()})")

    specs = [s for s in (QUICK_SPECS if args.quick else FULL_SPECS) if s.name in args.datasets.split(",")]
    if not args.no_prefault:
        warm_memory(specs)
    t0 = time.monotonic()
    datasets = [build_dataset(spec, web_root, lists_dir, nginx.base_url) for spec in specs]
    log(f"datasets written in {time.monotonic() - t0:.1f} s: "
        + ", ".join(f"{d.name} {d.count:,} files {d.total_bytes / 2**20:,.0f} MiB" for d in datasets))

    images = image_dir(workdir, max((d.total_bytes for d in datasets), default=0))
    if images != workdir:
        stack.callback(shutil.rmtree, images, True)
    filesystems = FreshFilesystems(workdir, images)
    fs_mode = filesystems.probe(args.fs)
    log(f"downloads go to a fresh {fs_mode} per run")

    env = tool_env()
    repo = os.path.abspath(args.repo)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Compiled once by the probe and reused by every run, as on a user's machine, but
    # kept in the temp dir: the checkout under test is never written to.
    env["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    # `python -m fetcher` would put the cwd first on sys.path and import whatever fetcher/
    # is there; safe-path mode (3.11+) keeps --repo in charge, and runs start in neutral dirs.
    env["PYTHONSAFEPATH"] = "1"
    bench = Bench(args, workdir, filesystems, [args.python, "-m", "fetcher"], env)

    configs = [FetcherConfig.parse(spec) for spec in args.fetcher] if args.fetcher else list(FETCHER_CONFIGS)
    if args.durability:  # the same configurations at each level, interleaved like every other row
        levels = [level.strip() for level in args.durability.split(",") if level.strip()]
        configs = [FetcherConfig.parse(f"{config.label[len('fetcher '):]} --durability {level}")
                   for config in configs for level in levels]
    probe_url = f"{nginx.base_url}/{datasets[0].name}/{next(iter(datasets[0].files))}" if datasets else ""
    jobs = list(references)
    for config in configs:
        why = probe_fetcher(bench, config, probe_url)
        if why is None:
            jobs.append(fetcher_job(config, bench.launcher))
        else:
            skipped.append(f"{config.label}: {why}")
            log(f"skipping {config.label}: {why}")

    header = machine_lines() + tool_versions(bench, references, nginx) + [
        f"{'setup:':<12} nginx on 127.0.0.1 (keep-alive, sendfile, access_log off); downloads into a fresh "
        f"{fs_mode} per run; medians of {args.reps}; RLIMIT_NOFILE {nofile}",
    ]

    load_before = load_average()
    if load_before > 0.5 * (os.cpu_count() or 1):
        log(f"WARNING: the machine is busy (load average {load_before:.1f}): figures will be skewed")
    warm_up(bench, datasets, jobs)
    cells = run_matrix(bench, datasets, jobs)
    header.append(f"{'load:':<12} 1-minute load average {load_before:.1f} before the runs, "
                  f"{load_average():.1f} after the main table (this harness alone adds ~1)")
    report = ["```", *header, "```", "", *main_table(cells), ""]
    report += [
        "files/s and MiB/s: higher is better; CPU µs per file (user+sys of the whole process "
        "tree, start-up included) and peak RSS (summed over the process tree, sampled every 20 ms): "
        "lower is better. In parentheses: the ratio to curl --parallel in the same run. "
        "Spread: (max − min) ÷ median of the repetitions' wall times.",
    ]
    if skipped:
        report += ["", "Skipped:", *(f"- {line}" for line in skipped)]

    if not args.no_latency:
        curl = next((job.version_argv[0] for job in jobs if job.label == "curl --parallel"), None)
        latency_cells = run_latency(bench, stack, lists_dir, curl)
        report += ["", f"Latency-bound: every response delayed {args.latency_delay * 1000:.0f} ms, "
                       f"{args.latency_rounds} × pool URLs of 64 bytes, medians of {args.reps}. "
                       "Mid-run = from the end of the first round to the start of the last, as the server "
                       "saw it (the steady state); server window = first request received to last response "
                       "sent (ramp-up and tail included); whole run = the client's wall time (start-up "
                       "included). In parentheses: fraction of pool ÷ delay.",
                   "", *latency_table(latency_cells)]
    elapsed = time.monotonic() - started
    report += ["", f"({'quick' if args.quick else 'full'} run, {elapsed:.0f} s in all)"]
    text = "\n".join(report)
    print(text, flush=True)
    if args.save:
        with open(args.save, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
