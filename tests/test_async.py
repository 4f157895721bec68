"""AsyncFetcher and afetch (issue 28): on the caller's loop (asyncio's and uvloop), against real servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from conftest import NEEDS_PYCURL
from proc_helpers import wait_until
from server import body_for

from fetcher import AsyncFetcher, Task, afetch, fetch
from fetcher.errors import ConfigError
from fetcher.models import Status
from fetcher.options import CURL_INSTALL_HINT

pytestmark = NEEDS_PYCURL
HERE = os.path.dirname(os.path.abspath(__file__))
LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    sys.platform == "win32", reason="uvloop runs on Unix only"))]


def run(main: Callable[[], Awaitable[Any]], loop: str = "asyncio") -> Any:
    """``main()`` on a fresh loop of that kind, shut down as ``asyncio.run`` does."""
    if loop == "uvloop":
        import uvloop

        event_loop = uvloop.new_event_loop()
    else:
        event_loop = asyncio.new_event_loop()
    try:
        return event_loop.run_until_complete(main())
    finally:
        event_loop.run_until_complete(event_loop.shutdown_asyncgens())
        event_loop.run_until_complete(event_loop.shutdown_default_executor())
        event_loop.close()


def files_under(root: str, suffix: str = "") -> list[str]:
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, dirs, names in os.walk(root) if ".fetcher" not in folder
                  for name in names if name.endswith(suffix))


@pytest.fixture
def far_server() -> Iterator[str]:
    """tests/server.py in a process of its own: its threads and CPU are not this process's."""
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py")], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


# -- results ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_map_500_urls_byte_exact_and_404s_are_failed_results(server, out, loop):
    urls = [server.url(f"/files/a{i}.bin?size={100 + i}") for i in range(450)]
    missing = [server.url(f"/nowhere/m{i}") for i in range(50)]
    items = urls[:10] + missing + urls[10:] + urls[:5]  # five repeats: one Result per unique item

    async def main() -> list[Any]:
        async with AsyncFetcher(out=out, pool=16, retries=0) as f:
            return [r async for r in f.map(items)]

    results = run(main, loop)
    assert len(results) == 500 and len({r.url for r in results}) == 500
    by_url = {r.url: r for r in results}
    for index, url in enumerate(urls):
        result = by_url[url]
        assert result.ok and result.status is Status.OK
        with open(os.path.join(out, result.path), "rb") as handle:
            assert handle.read() == body_for(f"a{index}.bin", 100 + index)
    assert all(not by_url[url].ok and by_url[url].http_status == 404 for url in missing)
    assert all(by_url[url].error.kind == "http-status" for url in missing)  # type: ignore[union-attr]
    with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as handle:
        assert len([json.loads(line) for line in handle]) == 500
    assert files_under(out, ".part") == []
    assert sum(server.stats.requests.values()) == 500


def test_memory_true_gives_bodies_and_writes_nothing(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    urls = [server.url(f"/files/m{i}?size=3000") for i in range(20)]

    async def main() -> list[Any]:
        return [r async for r in afetch(urls, memory=True, pool=4)]

    results = run(main)
    assert sorted(r.url for r in results) == sorted(urls)
    assert all(r.content == body_for(r.url.rsplit("/", 1)[1].split("?")[0], 3000) for r in results)
    assert os.listdir(tmp_path) == []


def test_fetch_returns_the_result_and_failures_are_values(server, out):
    async def main() -> tuple[Any, ...]:
        async with AsyncFetcher(out=out, retries=0) as f:
            ok, missing, bad = await asyncio.gather(
                f.fetch(Task(server.url("/files/t.jpg"), name="birds/t.jpg", meta={"id": 7})),
                f.fetch(server.url("/status/404")), f.fetch("ftp://example.com/x"))
            again = await f.fetch(server.url("/files/t.jpg"))  # done already: skipped, no request
        return ok, missing, bad, again, f.summary

    ok, missing, bad, again, summary = run(main)
    assert ok.ok and ok.path == "birds/t.jpg" and ok.meta == {"id": 7}
    assert os.path.getsize(os.path.join(out, "birds", "t.jpg")) == 1000
    assert not missing.ok and missing.http_status == 404
    assert not bad.ok and bad.error.kind == "unsupported-scheme"
    assert again.status is Status.SKIPPED and server.stats.requests["/files/t.jpg"] == 1
    assert summary.ok == 1 and summary.failed == 2


def test_map_reads_an_async_generator_with_bounded_look_ahead(server, out):
    read = []
    yielded = []
    furthest = []

    async def urls() -> AsyncIterator[str]:
        for i in range(300):
            read.append(i)
            furthest.append(len(read) - len(yielded))
            yield server.url(f"/files/g{i}?size=200")
            await asyncio.sleep(0)

    async def main() -> None:
        async with AsyncFetcher(out=out, pool=4) as f:
            async for result in f.map(urls(), ahead=10):
                assert result.ok
                yielded.append(result)

    run(main)
    assert len(yielded) == 300
    assert max(furthest) <= 11  # never more than ``ahead`` read beyond what came back (+ the one being read)


def test_submit_results_and_on_result(server, out):
    seen: list[str] = []

    async def main() -> list[str]:
        async with AsyncFetcher(out=out, pool=2, on_result=lambda r: seen.append(r.url)) as f:
            futures = [f.submit(server.url(f"/files/s{i}")) for i in range(5)]
            shared = f.submit(server.url("/files/s0"))  # in flight: shares the download
            got = [r.url async for r in f.results()]
            assert (await shared).url == (await futures[0]).url
        return got

    got = run(main)
    assert sorted(got) == sorted([server.url(f"/files/s{i}") for i in range(5)] + [server.url("/files/s0")])
    assert len(seen) == 6 and server.stats.requests["/files/s0"] == 1


# -- misuse --------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    ({"no_such_option": 1}, "unknown option: no_such_option"),
    ({"pool": 0}, "pool must be"),
    ({"backend": "thread"}, "backend must be 'multi'"),
    ({"client": "requests"}, "client must be 'curl'"),
    ({"session_factory": object}, "takes no session_factory"),
    ({"processes": 2}, "processes applies to the process backend only"),
])
def test_misuse_raises_config_error_from_the_constructor(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AsyncFetcher(memory=True, **kwargs)
    with pytest.raises(ConfigError, match=message):
        afetch([], memory=True, **kwargs)


def test_the_keyword_check_is_the_sync_apis(out):
    for bad in ({"no_such_option": 1}, {"retries": -1}, {"timeout": "x"}):
        with pytest.raises(ConfigError) as sync_error:
            list(fetch([], out=out, **bad))
        with pytest.raises(ConfigError) as async_error:
            AsyncFetcher(out=out, **bad)
        assert str(async_error.value) == str(sync_error.value)


def test_without_pycurl_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycurl", None)  # find_spec() then says "not installed"
    with pytest.raises(ConfigError, match="needs pycurl") as error:
        AsyncFetcher(memory=True)
    assert CURL_INSTALL_HINT in str(error.value)


def test_a_folder_in_use_is_a_config_error_when_entering(server, out):
    async def main() -> None:
        async with AsyncFetcher(out=out):
            with pytest.raises(ConfigError, match="in use by another fetcher run"):
                async with AsyncFetcher(out=out):
                    pass

    run(main)


# -- the loop's share ----------------------------------------------------------------------


def thread_count() -> int:
    """The process's threads, libcurl's and the loop's executor's included (Linux), else Python's."""
    if os.path.isdir("/proc/self/task"):
        return len(os.listdir("/proc/self/task"))
    return threading.active_count()


def cpu_queue_s() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat); 0.0 where unknown.

    On a loaded machine the kernel can leave a runnable loop thread off the CPU for longer than the
    bound below; that is the machine's doing, not something in the loop holding it.
    """
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@pytest.mark.parametrize("loop", LOOPS)
def test_the_loop_stays_responsive_and_no_thread_per_download(far_server, out, loop):
    urls = [f"{far_server}/files/r{i}.bin?size=5000" for i in range(500)]
    gaps: list[float] = []
    threads: list[int] = []

    async def main() -> tuple[int, int]:
        before = thread_count()
        running = True

        async def ticker() -> None:  # what any other task of the application does meanwhile
            while running:
                # Wall time minus the time the thread waited for a CPU. Read in this order, a
                # preemption between the two reads falls inside the wall time and outside the
                # queue time: never more excused than the thread really waited.
                asked = time.monotonic()
                queued = cpu_queue_s()
                await asyncio.sleep(0.01)
                queued = cpu_queue_s() - queued
                gaps.append(time.monotonic() - asked - queued)
                threads.append(thread_count())

        task = asyncio.create_task(ticker())
        saved = sum([r.ok async for r in afetch(urls, out=out, pool=16)])
        running = False
        await task
        return before, saved

    before, saved = run(main, loop)
    assert saved == 500
    # The bound on the loop's responsiveness: sleeping 10 ms never took 0.25 s, not counting
    # the time the kernel gave the CPU to other processes (a loaded CI machine). Still counted: the
    # loop's own CPU, blocking calls in it, and waiting for the GIL held by another thread.
    assert len(gaps) > 10 and max(gaps) < 0.25, sorted(gaps)[-5:]
    # No thread per download: the loop's executor (setup, teardown) and one flush thread at most.
    assert max(threads) - before <= 3, (before, max(threads))


# -- cancellation and resume ---------------------------------------------------------------


def slow_urls(server, count: int, size: int) -> list[str]:
    """Ranged files whose first response sends 1,000 bytes every 0.2 s: long enough to cancel half way."""
    return [server.url(f"/ranged/c{i}.bin?size={size}&interval=0.2") for i in range(count)]


async def start_then_cancel(server, urls: list[str], out: str, pool: int) -> tuple[int, AsyncFetcher]:
    """Consume ``map`` in a task; once every slot is busy and bytes came in, cancel that task."""
    fetcher = AsyncFetcher(out=out, pool=pool, per_host=pool)

    async def consume() -> None:
        async with fetcher:
            async for _ in fetcher.map(urls):
                pass

    task = asyncio.create_task(consume())
    for _ in range(500):  # bounded: 10 s
        if sum(server.stats.requests.values()) >= pool:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # a few pieces of each body arrive
    requested = sum(server.stats.requests.values())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return requested, fetcher


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelling_the_consumer_stops_requests_and_transfers(server, out, loop):
    urls = slow_urls(server, 40, 200_000)  # 40 s per body

    requested, fetcher = run(lambda: start_then_cancel(server, urls, out, 4), loop)
    assert requested == 4
    # The server sees every transfer end (it notices at its next write), well within a couple of seconds.
    wait_until(lambda: server.stats.active == 0, timeout=3.0, what="the transfers to end")
    time.sleep(0.5)
    assert sum(server.stats.requests.values()) == 4  # no request started after the cancel
    assert fetcher.summary is not None and fetcher.summary.interrupted
    parts = files_under(out, ".part")
    assert len(parts) == 4 and all(os.path.exists(os.path.join(out, p + ".meta")) for p in parts)

    async def again() -> list[Any]:  # the folder is free: the async with exited cleanly
        return [r async for r in afetch([server.url("/files/after")], out=out)]

    assert [r.ok for r in run(again, loop)] == [True]


def test_a_cancelled_run_resumes_with_range(server, out):
    urls = slow_urls(server, 3, 20_000)

    requested, _ = run(lambda: start_then_cancel(server, urls, out, 3))
    assert requested == 3 and len(files_under(out, ".part")) == 3

    async def rerun() -> list[Any]:
        return [r async for r in afetch(urls, out=out)]

    results = run(rerun)
    assert all(r.ok for r in results) and len(results) == 3
    for result in results:
        name = result.url.split("/")[-1].split("?")[0]
        with open(os.path.join(out, result.path), "rb") as handle:
            assert handle.read() == body_for(f"v1-{name}", 20_000)
        first, second = server.stats.ranges[f"/ranged/{name}"]
        assert first is None and second is not None and second.startswith("bytes=") and second != "bytes=0-"
    assert files_under(out, ".part") == []
