"""The process backend beyond the contract: dead workers, session factories, start methods.

In-process cases use forkserver and spawn only: forking this multi-threaded
pytest process (the server runs on a thread) is what those two avoid, and the
default chooses forkserver here for that reason. fork, the default of the
single-threaded fetcher command, is covered through the CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
from functools import partial

import pytest
from conftest import write_list
from proc_helpers import (
    HAVE_PROC, KILL_MARKER, RUN_TIMEOUT_S, Variant, cli_command, kill_group, read_manifest,
    suicidal_session, wait_until, worker_pids,
)

from fetcher import fetch
from fetcher.backends.process import ProcessBackend
from fetcher.errors import BackendError
from fetcher.models import Result, FetchTask
from fetcher.files.naming import name_for_url
from fetcher.options import Options
from fetcher.transports.factory import make_session

IN_PROCESS_METHODS = ["forkserver", "spawn"]


def _task(url: str, index: int) -> FetchTask:
    return FetchTask(url=url, name=name_for_url(url), index=index)


def _run_all(backend: ProcessBackend, tasks: list[FetchTask]) -> dict[str, Result]:
    for task in tasks:
        backend.submit(task)
    results: dict[str, Result] = {}
    for _ in range(RUN_TIMEOUT_S):  # bounded: wait() returns after at most 1 s
        if len(results) == len(tasks):
            break
        results.update((result.url, result) for result in backend.wait(1.0))
    assert len(results) == len(tasks), "not every task came back"
    return results


@pytest.mark.skipif(not HAVE_PROC, reason="finds the worker through /proc")
@pytest.mark.parametrize("start_method", [None, "forkserver", "spawn"], ids=["default", "forkserver", "spawn"])
def test_a_worker_killed_mid_download_is_replaced_and_its_url_fetched_again(
        start_method, server, tmp_path, out) -> None:
    victim = server.url("/slow/victim.bin?delay=2&size=100")  # time to find and kill its worker
    others = [server.url(f"/files/other{i}.bin?size=100") for i in range(4)]
    variant = Variant("process", start_method)
    # The backend reports the victim as a retryable worker-died; the scheduler tries it again.
    args = [write_list(tmp_path, [victim, *others]), "-o", out, "--pool", "1", "--retries", "1",
            "--backoff", "0", "-q"]
    process = subprocess.Popen(cli_command(variant, args), env=variant.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    try:
        wait_until(lambda: server.stats.requests["/slow/victim.bin"] == 1, what="the victim's request")
        workers = worker_pids(process.pid)
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)
        _stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        kill_group(process)

    assert process.returncode == 0, stderr
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert sorted(record["url"] for record in records) == sorted([victim, *others])
    assert all(record["status"] == "ok" for record in records)
    assert server.stats.requests["/slow/victim.bin"] == 2
    assert [r["attempts"] for r in records if r["url"] == victim] == [2]


@pytest.mark.parametrize("start_method", IN_PROCESS_METHODS)
def test_a_url_that_keeps_killing_workers_is_reported_and_the_rest_finish(
        start_method, server, out) -> None:
    options = Options.create(out=out, pool=2, backend="process")
    killer = server.url(KILL_MARKER + "crash.bin")
    urls = [server.url(f"/files/fine{i}.bin?size=100") for i in range(6)]
    tasks = [_task(url, index) for index, url in enumerate([killer, *urls])]

    with ProcessBackend(options, partial(suicidal_session, options), start_method=start_method) as backend:
        results = _run_all(backend, tasks)

    crashed = results.pop(killer)
    assert crashed.error is not None and crashed.error.kind == "worker-died"
    assert "SIGKILL" in crashed.error.message
    assert crashed.retryable is True  # the scheduler decides whether to try again
    assert all(result.ok for result in results.values()), results


def test_the_scheduler_retries_a_url_that_killed_its_worker_within_retries(server, out) -> None:
    options = Options.create(out=out, pool=2, backend="process")
    killer = server.url(KILL_MARKER + "again.bin")
    fine = server.url("/files/fine.bin?size=100")
    results = {r.url: r for r in fetch([killer, fine], out=out, backend="process", pool=2, retries=1,
                                       backoff=0, session_factory=partial(suicidal_session, options))}
    assert results[killer].error.kind == "worker-died" and results[killer].attempts == 2
    assert results[fine].ok


def test_an_unpicklable_session_factory_is_refused_before_any_worker_starts(out) -> None:
    options = Options.create(out=out, pool=2, backend="process")
    backend = ProcessBackend(options, lambda: None, start_method="spawn")  # type: ignore[arg-type, return-value]

    with pytest.raises(BackendError, match="must pickle"):
        backend.__enter__()


def _broken_factory() -> None:
    raise RuntimeError("no certificates here")


@pytest.mark.parametrize("start_method", IN_PROCESS_METHODS)
def test_a_session_factory_failing_in_the_worker_stops_the_run_with_its_message(
        start_method, server, out) -> None:
    options = Options.create(out=out, pool=2, backend="process")
    task = _task(server.url("/files/a.bin"), 0)

    with pytest.raises(BackendError, match="RuntimeError: no certificates here"):
        with ProcessBackend(options, _broken_factory, start_method=start_method) as backend:  # type: ignore[arg-type]
            backend.submit(task)
            for _ in range(RUN_TIMEOUT_S):
                backend.wait(1.0)
    assert server.stats.requests == {}


def test_an_unknown_start_method_names_the_choices(monkeypatch, out) -> None:
    monkeypatch.setenv("FETCHER_START_METHOD", "teleport")

    with pytest.raises(BackendError, match="'teleport'.*spawn"):
        ProcessBackend(Options.create(out=out, backend="process"))


@pytest.mark.parametrize("pool,processes,expected", [(8, 2, [4, 4]), (5, 2, [3, 2]), (1, 4, [1]),
                                                      (3, 0, [1, 1, 1]), (2, 8, [1, 1])])
def test_the_pool_is_shared_over_the_worker_processes(pool, processes, expected) -> None:
    from fetcher.backends.process import shares

    assert shares(pool, processes or 3) == expected
    assert sum(expected) == pool


@pytest.mark.parametrize("start_method", IN_PROCESS_METHODS)
def test_a_dead_worker_reports_every_task_it_was_running(start_method, server, out) -> None:
    """One process, three slots: the URL that kills it takes the two slow ones in flight with it."""
    options = Options.create(out=out, pool=3, processes=1, backend="process")
    killer = server.url(KILL_MARKER + "together.bin")
    slow = [server.url(f"/slow/s{i}.bin?delay=3&size=100") for i in range(2)]
    tasks = [_task(url, index) for index, url in enumerate([*slow, killer])]

    with ProcessBackend(options, partial(suicidal_session, options), start_method=start_method) as backend:
        results = _run_all(backend, tasks)

    assert {url: r.error.kind for url, r in results.items() if r.error} == dict.fromkeys([*slow, killer],
                                                                                         "worker-died")
    assert all(r.retryable for r in results.values())


def test_one_process_runs_the_whole_pool_at_once(server, tmp_path, out) -> None:
    urls = [server.url(f"/slow/p{i}?delay=0.5&size=10") for i in range(6)]
    args = [write_list(tmp_path, urls), "-o", out, "--pool", "3", "--processes", "1", "-q"]
    done = subprocess.run(cli_command(Variant("process"), args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert 2 <= server.stats.max_active <= 3


def test_processes_is_refused_for_other_backends(tmp_path, out) -> None:
    done = subprocess.run(cli_command(Variant("thread"), [write_list(tmp_path, ["http://127.0.0.1:9/x"]),
                                                          "-o", out, "--processes", "2"]),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert done.stderr.strip() == ("fetcher: error: processes applies to the process backend only, "
                                   "not to 'thread'")


def test_the_default_start_method_forks_only_a_single_threaded_parent(monkeypatch) -> None:
    import threading

    from fetcher.backends import process

    monkeypatch.delenv("FETCHER_START_METHOD", raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert process.default_start_method() == "fork"
    assert ProcessBackend(Options.create(backend="process")).start_method == "fork"
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert process.default_start_method() == "forkserver"
    monkeypatch.setenv("FETCHER_START_METHOD", "spawn")
    assert ProcessBackend(Options.create(backend="process")).start_method == "spawn"


def test_an_unpicklable_factory_is_refused_even_when_the_default_would_fork(monkeypatch, out) -> None:
    """Picklability does not depend on whether the parent happens to run a thread today."""
    import threading

    monkeypatch.delenv("FETCHER_START_METHOD", raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    options = Options.create(out=out, pool=1, backend="process")
    with pytest.raises(BackendError, match="must pickle"):
        with ProcessBackend(options, lambda: make_session(options)):
            pass


def test_processes_are_capped_whatever_the_pool(tmp_path, out) -> None:
    done = subprocess.run(cli_command(Variant("process"), [write_list(tmp_path, ["http://127.0.0.1:9/x"]),
                                                           "-o", out, "--pool", "1000", "--processes", "300"]),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "more than the 256 worker processes" in done.stderr and done.stderr.count("\n") == 1
