"""serve's CPU per result over Redis (issue 29), optionally two checkouts A/B in interleaved rounds.

    python benchmarks/serve_cpu.py                          # this checkout, 2 rounds of 30,000 results
    python benchmarks/serve_cpu.py --before /tmp/old-tree   # old tree and this one, rounds interleaved
    python benchmarks/serve_cpu.py --results 50000 --rounds 3

Two rows, each with serve's user+sys CPU per result (getrusage of its process), the two
workers' and redis-server's beside it, and the wall rate, with the load average:

- protocol + journal: RedisServe fed in a window of 20,000 tasks, every result recorded in a
  real journal (benchmarks/distributed_redis.py), 2 worker processes leasing 1,000 at a time
  and answering at once. serve's CPU per result is what bounds it on a machine where serve
  has a core of its own: 1e6 / (µs per result) results/s.
- end to end, on each broker: ``fetcher serve LIST --broker redis://... --queue bench`` (and
  ``--bind 127.0.0.1:0``, the manager broker; its redis column is 0) (input, scheduler, journal,
  manifest, all of it; process start included) and 2 ``Worker`` processes whose backend answers
  every task at once (benchmarks/distributed.py --instant-worker).

``--before DIR``: a tree of another checkout (``git archive COMMIT | tar -x -C DIR``); its
``fetcher`` package is put first on the children's path, this checkout's harness drives both.
Wall-clock rates are noise on a shared machine: compare the CPU columns, within one run.
Prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _proc_cpu(pid: int) -> float:
    """user+sys seconds of a running process (/proc), for redis-server."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _env(tree: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=tree, FETCHER_AUTHKEY="benchmark-key-0123456789abcdef")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # read compiled bytecode, as an installed fetcher does
    return env


def child_protocol(redis_url: str, count: int, redis_pid: int) -> None:
    """Child (the tree under test first on sys.path): the protocol + journal row, one JSON line."""
    sys.path.insert(1, HERE)
    import redis  # noqa: F401  imported before the measurement, as serve has it loaded
    import fetcher.distributed.redis.serve  # noqa: F401
    import fetcher.run.journal  # noqa: F401
    from distributed_redis import measure_redis_protocol

    work = tempfile.mkdtemp(prefix="serve-cpu-")
    try:
        redis_before = _proc_cpu(redis_pid)
        before = resource.getrusage(resource.RUSAGE_SELF)
        wall = measure_redis_protocol(redis_url, count, 1000, work)
        after = resource.getrusage(resource.RUSAGE_SELF)
        workers = resource.getrusage(resource.RUSAGE_CHILDREN)
        serve = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        print(json.dumps({"wall": wall, "serve": serve, "workers": workers.ru_utime + workers.ru_stime,
                          "redis": _proc_cpu(redis_pid) - redis_before}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def protocol(tree: str, redis: object, count: int) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child-protocol", redis.url, str(count),  # type: ignore[attr-defined]
                           str(redis.proc.pid)], env=_env(tree), cwd=ROOT, check=True,  # type: ignore[attr-defined]
                          stdout=subprocess.PIPE, text=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def end_to_end(tree: str, redis: object | None, count: int, work: str) -> dict[str, float]:
    """``fetcher serve`` over Redis (or, with ``redis`` None, the manager broker on an ephemeral port)."""
    listing = os.path.join(work, "list.txt")
    if not os.path.exists(listing):
        with open(listing, "w", encoding="utf-8") as handle:
            handle.writelines(f"http://127.0.0.1:9/files/img{i}.jpg\n" for i in range(count))
    out = tempfile.mkdtemp(prefix="serve-", dir=work)
    env = _env(tree)
    redis_pid = redis.proc.pid if redis is not None else os.getpid()  # type: ignore[attr-defined]
    redis_before = _proc_cpu(redis_pid) if redis is not None else 0.0
    broker = ["--broker", redis.url, "--queue", "bench"] if redis is not None else ["--bind", "127.0.0.1:0"]  # type: ignore[attr-defined]
    started = time.perf_counter()
    with open(os.path.join(out, "serve.log"), "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "fetcher", "serve", listing, *broker,
                                  "-o", os.path.join(out, "o"), "--per-host", "0", "-q"],
                                 env=env, cwd=ROOT, stdout=log, stderr=log)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        address = redis.url if redis is not None else _listening(os.path.join(out, "serve.log"), serve)  # type: ignore[attr-defined]
        workers = [subprocess.Popen([sys.executable, os.path.join(HERE, "distributed.py"), "--instant-worker",
                                     address, os.path.join(out, f"w{i}")], env=env, cwd=ROOT) for i in range(2)]
        _, status, usage = os.wait4(serve.pid, 0)
        serve.returncode = status = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        spent = 0.0
        for proc in workers:
            _, _, worker_usage = os.wait4(proc.pid, 0)
            proc.returncode = 0
            spent += worker_usage.ru_utime + worker_usage.ru_stime
    finally:
        for proc in [serve, *workers]:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    if status != 0:
        raise RuntimeError(f"fetcher serve ({tree}) exited {status}")
    return {"wall": wall, "serve": usage.ru_utime + usage.ru_stime, "workers": spent,
            "redis": _proc_cpu(redis_pid) - redis_before if redis is not None else 0.0}


def _listening(log: str, serve: subprocess.Popen[bytes]) -> str:
    """The manager broker's HOST:PORT from serve's "listening on" line (bounded wait)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and serve.poll() is None:
        with open(log, encoding="utf-8", errors="replace") as text:
            for line in text:
                if "listening on 127.0.0.1:" in line:
                    return "127.0.0.1:" + line.rsplit(":", 1)[1].strip()
        time.sleep(0.05)
    raise RuntimeError("fetcher serve did not start")


def row(name: str, tree: str, figures: dict[str, float], count: int) -> str:
    per = {k: figures[k] / count * 1e6 for k in ("serve", "workers", "redis")}
    return (f"| {name} | {os.path.basename(tree.rstrip('/')) or tree} | {per['serve']:.1f} | "
            f"{1e6 / per['serve']:,.0f} | {per['workers']:.1f} | {per['redis']:.1f} | "
            f"{count / figures['wall']:,.0f} | {os.getloadavg()[0]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="another checkout's tree, measured in the same rounds")
    parser.add_argument("--results", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child-protocol", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_protocol:
        child_protocol(args.child_protocol[0], int(args.child_protocol[1]), int(args.child_protocol[2]))
        return
    sys.path.insert(0, HERE)
    from distributed_redis import start_redis

    trees = ([os.path.abspath(args.before)] if args.before else []) + [ROOT]
    work = tempfile.mkdtemp(prefix="serve-cpu-bench-")
    redis = start_redis(work)
    try:
        print(f"{args.results:,} results a run, {args.rounds} rounds, trees interleaved; CPU in µs per result")
        print("| row | tree | serve µs | serve's bound (results/s on a core) | workers µs | redis µs | wall results/s | load |")
        print("|---|---|--:|--:|--:|--:|--:|--:|")
        for _ in range(max(1, args.rounds)):
            for tree in trees:
                print(row("protocol + journal", tree, protocol(tree, redis, args.results), args.results), flush=True)
            for tree in trees:
                print(row("end to end, Redis", tree, end_to_end(tree, redis, args.results, work),
                          args.results), flush=True)
            for tree in trees:
                print(row("end to end, manager", tree, end_to_end(tree, None, args.results, work),
                          args.results), flush=True)
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
