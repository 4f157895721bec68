#!/usr/bin/env python3
"""Per-file cost of the default path against curl --parallel, on figures a loaded machine cannot skew.

    python benchmarks/profile_path.py                    # CPU (getrusage) and syscalls per file
    python benchmarks/profile_path.py --callgrind        # + instructions per file (valgrind, slow)

Serves ``--files`` small files (4-64 KiB, the small dataset's sizes) from a local
nginx, fetches them with ``curl --parallel`` and with ``fetcher LIST`` (the
default: multi backend, curl client) into tmpfs, and prints per file:

- CPU µs (user+sys from ``os.wait4``), the median of ``--reps`` runs;
- system calls (``strace -c -f``), by name for the ones that matter;
- instructions (``valgrind --tool=callgrind``), with ``--callgrind``.

Marginal figures: every tool runs on the whole list and on its first fifth, and
the per-file figure is the difference divided by the difference in files, so
interpreter start-up (fetcher's 0.12 s) does not count. Instructions and system
calls hardly depend on the machine's load; CPU µs does somewhat (cache misses),
so the load average is printed beside it. Standard library only.
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
from collections.abc import Callable, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_data import KIB, DatasetSpec, build_dataset  # noqa: E402
from bench_nginx import Nginx  # noqa: E402
from bench_tools import tool_env  # noqa: E402

CURL = "/usr/bin/curl"
TIMEOUT_S = 600
SYSCALLS = ("openat", "write", "read", "rename", "renameat2", "lstat", "newfstatat", "stat", "statx",
            "access", "close", "fsync", "fdatasync", "syncfs", "epoll_wait", "epoll_ctl", "recvfrom",
            "sendto", "poll", "getpid", "fcntl", "ioctl", "lseek", "unlink", "mkdir", "clock_gettime")

Command = Callable[[str, str, str], list[str]]  # (url list, curl config, out dir) -> argv


def curl_command(pool: int) -> Command:
    def command(urls: str, config: str, out: str) -> list[str]:
        return [CURL, "-q", "--parallel", "--parallel-max", str(pool), "--no-progress-meter", "--show-error",
                "--fail", "--config", config]
    return command


def fetcher_command(python: str, pool: int, extra: Sequence[str]) -> Command:
    def command(urls: str, config: str, out: str) -> list[str]:
        return [python, "-m", "fetcher", urls, "--pool", str(pool), "--per-host", str(pool),
                "-o", out, "--quiet", *extra]
    return command


def run(argv: list[str], out: str, wrap: Sequence[str] = ()) -> float:
    """Run ``argv`` in a fresh ``out`` (cwd), return its CPU seconds (user+sys, the tree)."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    proc = subprocess.Popen([*wrap, *argv], cwd=out, env=tool_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0 and not wrap:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err[-600:]}")
    return usage.ru_utime + usage.ru_stime


def lists(folder: str, dataset_urls: str, dataset_config: str, count: int) -> tuple[str, str]:
    """The first ``count`` entries of the URL list and of curl's config."""
    with open(dataset_urls) as handle:
        urls = handle.read().splitlines()[:count]
    with open(dataset_config) as handle:
        config = handle.read().splitlines()
    # curl's config: url = ... / output = ... pairs (and maybe a header line or two)
    head = [line for line in config if not line.startswith(("url", "output"))]
    pairs = [line for line in config if line.startswith(("url", "output"))][:2 * count]
    url_path, config_path = os.path.join(folder, f"urls-{count}.txt"), os.path.join(folder, f"curl-{count}.cfg")
    with open(url_path, "w") as handle:
        handle.write("\n".join(urls) + "\n")
    with open(config_path, "w") as handle:
        handle.write("\n".join(head + pairs) + "\n")
    return url_path, config_path


def syscalls(argv: list[str], out: str, scratch: str) -> dict[str, int]:
    report = os.path.join(scratch, "strace.txt")
    run(argv, out, ["strace", "-c", "-f", "-o", report])
    counts: dict[str, int] = {}
    with open(report) as handle:
        for line in handle:
            fields = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                counts[fields[-1]] = int(fields[3])
    return counts


def instructions(argv: list[str], out: str, scratch: str) -> int:
    report = os.path.join(scratch, "callgrind.out")
    log = os.path.join(scratch, "callgrind.log")
    run(argv, out, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={report}", f"--log-file={log}",
                    "--trace-children=yes"])
    with open(log) as handle:
        found = re.findall(r"Collected : (\d+)", handle.read())
    return sum(int(value) for value in found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true", help="also count instructions (slow)")
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--python", default=os.path.join(os.path.dirname(HERE), ".venv", "bin", "python"))
    parser.add_argument("--fetcher-args", default="", help="extra arguments for fetcher, e.g. '--durability none'")
    parser.add_argument("--only", choices=("curl", "fetcher"), help="run one tool only")
    args = parser.parse_args(argv)
    small = DatasetSpec("small", "s", args.files, 4 * KIB, 64 * KIB, "uniform")
    tools: dict[str, Command] = {"curl --parallel": curl_command(args.pool),
                                 "fetcher (default)": fetcher_command(args.python, args.pool,
                                                                      args.fetcher_args.split())}
    if args.only:
        tools = {name: cmd for name, cmd in tools.items() if name.startswith(args.only)}
    scratch = tempfile.mkdtemp(prefix="profile-path-", dir="/dev/shm")
    os.chmod(scratch, 0o755)  # nginx's worker runs as another user
    nginx = Nginx(shutil.which("nginx") or "/usr/sbin/nginx", os.path.join(scratch, "www"),
                  os.path.join(scratch, "nginx"))
    try:
        os.makedirs(nginx.web_root)
        nginx.start()
        dataset = build_dataset(small, nginx.web_root, scratch, nginx.base_url)
        counts = (args.files // 5, args.files)
        files = {count: lists(scratch, dataset.url_list, dataset.curl_config, count) for count in counts}
        out = os.path.join(scratch, "out")
        print(f"# {args.files} files of 4-64 KiB, pool {args.pool}, tmpfs; load {os.getloadavg()}", flush=True)
        for name, command in tools.items():
            run(command(*files[counts[1]], out), out)  # warm-up
            cpu = {count: statistics.median(run(command(*files[count], out), out) for _ in range(args.reps))
                   for count in counts}
            marginal = (cpu[counts[1]] - cpu[counts[0]]) / (counts[1] - counts[0])
            print(f"{name}: CPU {cpu[counts[1]] * 1e6 / counts[1]:.0f} µs/file whole run, "
                  f"{marginal * 1e6:.0f} µs/file marginal ({cpu})", flush=True)
            if not args.no_strace:
                calls = {count: syscalls(command(*files[count], out), out, scratch) for count in counts}
                per_file = {call: (calls[counts[1]].get(call, 0) - calls[counts[0]].get(call, 0))
                            / (counts[1] - counts[0]) for call in set(calls[counts[1]]) | set(calls[counts[0]])}
                total = sum(per_file.values())
                shown = ", ".join(f"{call} {value:.2f}" for call, value in
                                  sorted(per_file.items(), key=lambda kv: -kv[1]) if value >= 0.05)
                print(f"{name}: syscalls {total:.1f}/file marginal: {shown}", flush=True)
            if args.callgrind:
                ins = {count: instructions(command(*files[count], out), out, scratch) for count in counts}
                marginal_ins = (ins[counts[1]] - ins[counts[0]]) / (counts[1] - counts[0])
                print(f"{name}: instructions {marginal_ins / 1e3:.0f} k/file marginal, "
                      f"start-up+rest {ins[counts[0]] / 1e6:.0f} M ({ins})", flush=True)
        print(f"# load after {os.getloadavg()}")
    finally:
        nginx.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
