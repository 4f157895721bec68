"""Distributed-mode benchmarks (issue 6). Prints numbers, asserts nothing.

    python benchmarks/distributed.py            # 200,000 leases; 800 latency-bound URLs
    python benchmarks/distributed.py --quick    # 50,000 leases; 240 URLs

1. Lease + complete throughput of one server, workers doing no HTTP:
   a. the protocol alone: a Coordinator behind its RPC server, fed every task
      up front, and 2 worker processes that lease a batch, answer it at once
      and lease again;
   b. end to end: ``fetcher serve`` (journal, scheduler, manifest, all of it)
      and 2 ``Worker`` processes whose backend answers every task at once.
2. 1 worker against 2 on a latency-bound list (the test server waits 50 ms
   before each response), same pool per worker, ``--per-host 0``.

Everything runs on 127.0.0.1 with ephemeral ports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
KEY = "benchmark-key-0123456789abcdef"
BATCH = 1000


def protocol_worker(port: int, count: int) -> None:
    """Child: lease, complete at once, until the coordinator says the run is over."""
    from fetcher import __version__
    from fetcher.distributed.protocol import PROTOCOL, Finished, Grant, WorkerInfo
    from fetcher.distributed.rpc import Link
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
    from fetcher.distributed.coordinator import Coordinator
    from fetcher.distributed.protocol import EXPOSED
    from fetcher.distributed.rpc import RpcServer
    from fetcher.models import Task
    from fetcher.options import Options

    coordinator = Coordinator(Options.create(out=tempfile.gettempdir()), "bench", 1, lease_timeout=60)
    for i in range(count):
        url = f"http://127.0.0.1:9/files/img{i}.jpg"
        coordinator.offer(Task(url=url, name=f"img{i}.jpg", index=i))
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
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()
    return elapsed


def instant_worker(port: int, out: str) -> None:
    """Child: a real Worker whose backend answers every task at once (no HTTP)."""
    from fetcher.backends.base import Backend
    from fetcher.distributed.broker import ManagerSpec
    from fetcher.distributed.events import Outcome
    from fetcher.distributed.worker import Worker, WorkerConfig
    from fetcher.models import Result, Status, Task

    class Instant(Backend):
        name = "instant"

        def _start(self) -> None:
            pass

        def submit(self, task: Task) -> None:
            self._deliver(Result(task.url, Status.OK, path=task.name, bytes=1, attempts=task.attempt,
                                 index=task.index))

        def shutdown(self, cancel: bool = False) -> None:
            pass

    config = WorkerConfig(ManagerSpec(("127.0.0.1", port), KEY.encode()), out, "instant", pool=BATCH,
                          prefetch=BATCH)
    sys.exit(Worker(config, backend_factory=Instant).run() is not Outcome.DONE)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def start_serve(list_path: str, out: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], int, str]:
    log = os.path.join(out + ".log")
    os.makedirs(out, exist_ok=True)
    with open(log, "wb") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "fetcher", "serve", list_path, "--bind", "127.0.0.1:0",
                                 "-o", out, *extra], stdout=handle, stderr=handle, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(log, encoding="utf-8") as text:
            for line in text:
                if "listening on 127.0.0.1:" in line:
                    return proc, int(line.rsplit(":", 1)[1]), log
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("fetcher serve did not start: " + read(log))


def measure_end_to_end(work: str, count: int) -> tuple[float, str]:
    list_path = os.path.join(work, "instant.txt")
    with open(list_path, "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(f"http://127.0.0.1:9/files/img{i}.jpg\n")
    out = os.path.join(work, "instant-server")
    started = time.perf_counter()
    server, port, log = start_serve(list_path, out, ["--per-host", "0", "-q"])
    workers = [subprocess.Popen([sys.executable, __file__, "--instant-worker", str(port),
                                 os.path.join(work, f"instant-w{i}")]) for i in range(2)]
    try:
        server.wait(600)
        elapsed = time.perf_counter() - started
        for proc in workers:
            proc.wait(60)
    finally:
        for proc in [server, *workers]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return elapsed, read(log).strip()


def measure_latency_bound(work: str, base: str, count: int, workers: int, pool: int) -> tuple[float, float]:
    """(wall seconds from starting the server to its exit, the run's own seconds from its summary)."""
    list_path = os.path.join(work, f"slow-{workers}.txt")
    with open(list_path, "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(f"{base}/slow/w{workers}-{i}.bin?delay=0.05&size=2000\n")
    out = os.path.join(work, f"slow-server-{workers}")
    started = time.perf_counter()
    server, port, log = start_serve(list_path, out, ["--per-host", "0"])
    procs = [subprocess.Popen([sys.executable, "-m", "fetcher", "work", f"127.0.0.1:{port}", "--pool", str(pool),
                               "-o", os.path.join(work, f"slow-w{workers}-{i}"), "-q"], cwd=ROOT)
             for i in range(workers)]
    try:
        code = server.wait(600)
        elapsed = time.perf_counter() - started
        for proc in procs:
            proc.wait(60)
    finally:
        for proc in [server, *procs]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if code != 0:
        print(f"  (serve exited {code})")
    summary = read(log).split("Finished ", 1)[1]
    return elapsed, float(summary.split(" in ", 1)[1].split(" s ", 1)[0])


def start_http_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "server.py")],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, f"http://127.0.0.1:{int(server.stdout.readline())}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--protocol-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--instant-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.protocol_worker:
        protocol_worker(*args.protocol_worker)
        return
    if args.instant_worker:
        instant_worker(int(args.instant_worker[0]), args.instant_worker[1])
        return
    os.environ["FETCHER_AUTHKEY"] = KEY
    leases = 50_000 if args.quick else 200_000
    urls = 240 if args.quick else 800
    pool = 8
    work = tempfile.mkdtemp(prefix="fetcher-dist-bench-")
    http, base = start_http_server()
    try:
        elapsed = measure_protocol(leases)
        print(f"protocol: {leases:,} leases + completions, 2 worker processes, batches of {BATCH}: "
              f"{elapsed:.2f} s = {leases / elapsed:,.0f} URLs/s")
        elapsed, log = measure_end_to_end(work, leases)
        print(f"end to end (fetcher serve with journal and manifest, 2 workers, no HTTP): {leases:,} URLs in "
              f"{elapsed:.2f} s = {leases / elapsed:,.0f} URLs/s, process start included")
        one, one_run = measure_latency_bound(work, base, urls, 1, pool)
        two, two_run = measure_latency_bound(work, base, urls, 2, pool)
        print(f"latency-bound list ({urls} URLs, 50 ms per response, pool {pool} per worker; ideal "
              f"{urls * 0.05 / pool:.2f} s and {urls * 0.05 / pool / 2:.2f} s):")
        print(f"  wall, from starting the server to its exit (worker starts and linger included): "
              f"1 worker {one:.2f} s, 2 workers {two:.2f} s = {100 * two / one:.0f}%")
        print(f"  the run, as the server's summary reports it: 1 worker {one_run:.2f} s, 2 workers {two_run:.2f} s "
              f"= {100 * two_run / one_run:.0f}%")
    finally:
        http.terminate()
        http.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
