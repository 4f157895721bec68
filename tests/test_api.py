"""The Python API against the loopback server: streaming, futures, crawling, memory, misuse."""

from __future__ import annotations

import os
import time
from concurrent.futures import CancelledError

import pytest
import requests
from server import body_for

import fetcher
from fetcher import Fetcher, Result, Task, fetch
from fetcher.errors import ConfigError
from fetcher.models import Status


def parts_under(root) -> list[str]:
    return [f for _, _, fs in os.walk(root) for f in fs if ".part" in f]


def test_public_names_and_lazy_import():
    assert set(fetcher.__all__) == {"fetch", "Fetcher", "Task", "Result", "AsyncFetcher", "afetch", "__version__"}
    assert Result.__module__ == "fetcher.models"


def test_fetch_streams_one_result_per_unique_url(server, out):
    urls = [server.url(f"/files/s{i}.jpg?size=500") for i in range(20)]
    results = list(fetch(urls + urls[:3], out=out, pool=4))
    assert sorted(r.url for r in results) == sorted(urls)
    assert all(r.ok and r.status is Status.OK for r in results)
    for r in results:
        with open(os.path.join(out, r.path), "rb") as handle:
            assert len(handle.read()) == 500
    assert os.path.exists(os.path.join(out, "manifest.jsonl"))


def test_failures_are_results_not_exceptions(server, out):
    results = {r.url: r for r in fetch([server.url("/status/404"), "ftp://x/y", server.url("/files/ok")],
                                       out=out, retries=0)}
    assert results[server.url("/status/404")].error.kind == "http-status"
    assert results["ftp://x/y"].error.kind == "unsupported-scheme"
    assert results[server.url("/files/ok")].ok


def test_a_generator_can_feed_itself_while_results_come_back(server, out):
    todo = [server.url("/files/seed.jpg")]
    produced = []

    def crawl():
        while True:
            if todo:
                url = todo.pop()
                produced.append(url)
                yield url
            else:
                yield None  # nothing right now: ask again after the next result

    seen = 0
    for result in fetch(crawl(), out=out, pool=3):
        seen += 1
        if seen < 10:  # every result "discovers" two more URLs, up to 10 results
            todo.extend(server.url(f"/files/{seen}-{k}.jpg") for k in range(2))
    assert seen >= 10 and len(produced) == seen


def test_tasks_carry_names_headers_checksums_and_meta(server, out, client):
    import hashlib

    good = hashlib.sha256(body_for("c.jpg", 1000)).hexdigest()
    tasks = [
        Task(server.url("/echo"), name="sub/echo.json", headers={"X-Token": "t1"}, meta=("row", 1)),
        Task(server.url("/files/c.jpg"), checksum=f"sha256:{good}"),
        Task(server.url("/files/d.jpg"), checksum="sha256:" + "0" * 64),
        Task(server.url("/files/e.jpg"), checksum="sha1:abc"),
    ]
    results = {r.url: r for r in fetch(tasks, out=out, client=client)}
    echo = results[server.url("/echo")]
    assert echo.path == "sub/echo.json" and echo.meta == ("row", 1)
    with open(os.path.join(out, "sub", "echo.json"), encoding="utf-8") as handle:
        assert '"X-Token": "t1"' in handle.read()
    assert results[server.url("/files/c.jpg")].ok
    assert results[server.url("/files/d.jpg")].error.kind == "bad-content"
    assert results[server.url("/files/e.jpg")].error.kind == "invalid-input"


def test_in_memory_mode_writes_nothing_and_caps_size(server, tmp_path, monkeypatch, client):
    monkeypatch.chdir(tmp_path)
    small, big = server.url("/files/m.bin?size=3000"), server.url("/files/big.bin?size=300000")
    results = {r.url: r for r in fetch([small, big], memory=True, max_size="100K", client=client)}
    assert results[small].content == body_for("m.bin", 3000) and results[small].path is None
    assert results[big].error.kind == "too-large" and results[big].content is None
    assert list(tmp_path.iterdir()) == []


def test_own_session_factory_is_used(server, out):
    def factory() -> requests.Session:
        session = requests.Session()
        session.headers["X-Mine"] = "yes"
        return session

    (result,) = fetch([server.url("/echo")], memory=True, session_factory=factory)
    assert b'"X-Mine": "yes"' in result.content


def test_stopping_early_cancels_the_rest_and_frees_the_folder(server, out):
    urls = [server.url(f"/slow/x{i}.bin?delay=5") for i in range(4)] + [server.url("/files/first.jpg")]
    started = time.monotonic()
    stream = fetch(urls[::-1], out=out, pool=5)
    first = next(stream)
    stream.close()
    assert first.url == server.url("/files/first.jpg")
    assert time.monotonic() - started < 4.5
    assert parts_under(out) == []
    assert [r.ok for r in fetch([server.url("/files/again.jpg")], out=out)] == [True]  # lock released


def test_fetcher_futures_map_and_results(server, out):
    with Fetcher(out=out, pool=4) as f:
        future = f.submit(server.url("/files/a.jpg"))
        same = f.submit(server.url("/files/a.jpg"))  # while in flight: shares the result
        mapped = list(f.map([server.url(f"/files/m{i}.jpg") for i in range(6)]))
        assert [r.url for r in mapped] == [server.url(f"/files/m{i}.jpg") for i in range(6)]
        assert future.result(timeout=10).ok and same.result(timeout=10) == future.result()
        again = f.submit(server.url("/files/a.jpg")).result(timeout=10)  # after it finished: skipped
        assert again.status is Status.SKIPPED and again.path == future.result().path
        seen = {r.url for r in f.results()}
        assert server.url("/files/a.jpg") in seen
    assert f.summary is not None and f.summary.failed == 0
    assert server.stats.requests["/files/a.jpg"] == 1


def test_fetcher_results_include_urls_submitted_meanwhile(server, out):
    got = []
    with Fetcher(memory=True, pool=2) as f:
        f.submit(server.url("/files/0"))
        for result in f.results():
            got.append(result.url)
            if len(got) < 5:
                f.submit(server.url(f"/files/{len(got)}"))
    assert got == [server.url(f"/files/{i}") for i in range(5)]


def test_fetcher_on_result_and_cancel(server, out):
    seen: list[Result] = []
    f = Fetcher(out=out, pool=2, on_result=seen.append, keep_results=False)
    fast = f.submit(server.url("/files/fast.jpg"))
    assert fast.result(timeout=10).ok
    slow = [f.submit(server.url(f"/slow/s{i}.bin?delay=10")) for i in range(3)]
    time.sleep(0.3)
    started = time.monotonic()
    f.cancel()
    assert time.monotonic() - started < 5
    assert all(s.cancelled() for s in slow)
    with pytest.raises(CancelledError):
        slow[0].result()
    assert [r.url for r in seen] == [server.url("/files/fast.jpg")]
    assert parts_under(out) == []
    with pytest.raises(RuntimeError):
        f.submit(server.url("/files/late.jpg"))


def test_an_exception_in_the_block_cancels(server, out):
    with pytest.raises(ZeroDivisionError):
        with Fetcher(out=out) as f:
            pending = f.submit(server.url("/slow/z.bin?delay=10"))
            1 / 0
    assert pending.cancelled()


@pytest.mark.parametrize("kwargs,message", [
    ({"no_such_option": 1}, "unknown option: no_such_option"),
    ({"backend": "nope"}, "unknown backend 'nope'"),
    ({"pool": 0}, "pool must be"),
    ({"max_size": "huge"}, "max-size must be a size"),
    ({"client": "wget"}, "client must be one of requests, curl"),
    ({"client": "curl", "session_factory": requests.Session}, "cannot be combined with client='curl'"),
])
def test_misuse_raises_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        fetch([], **kwargs)
    with pytest.raises(ValueError):
        Fetcher(**kwargs)


def test_bad_items_are_type_errors(out):
    with pytest.raises(TypeError):
        list(fetch([42], out=out))


def test_in_memory_ignores_files_on_disk(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = server.url("/files/both.bin?size=700")
    (on_disk,) = fetch([url])  # into ./downloads
    assert on_disk.ok and os.path.exists(os.path.join("downloads", on_disk.path))
    (in_memory,) = fetch([url], memory=True)
    assert in_memory.status is Status.OK and in_memory.content == body_for("both.bin", 700)


def test_a_backend_that_cannot_run_is_a_config_error_at_once(tmp_path):
    """gevent in an unpatched process: ConfigError from Fetcher() and fetch() themselves, not a bare
    CancelledError from future.result() later."""
    from fetcher import Fetcher, fetch
    from fetcher.errors import ConfigError

    with pytest.raises(ConfigError, match="monkey-patched"):
        Fetcher(out=str(tmp_path / "out"), backend="gevent")
    with pytest.raises(ConfigError, match="monkey-patched"):
        fetch(["http://127.0.0.1:9/x"], out=str(tmp_path / "out"), backend="gevent")


def test_futures_carry_the_runs_own_error(server, tmp_path):
    """A run that cannot start (its folder is in use) fails each future with that error."""
    from fetcher import Fetcher
    from fetcher.errors import ConfigError

    out = str(tmp_path / "out")
    with Fetcher(out=out) as holder:
        holder.submit(server.url("/slow/hold.bin?delay=1")).result(timeout=30)
        other = Fetcher(out=out)
        future = other.submit(server.url("/files/a.bin"))
        with pytest.raises(ConfigError, match="in use"):
            future.result(timeout=30)
        with pytest.raises(ConfigError, match="in use"):
            other.close()


def test_a_url_submitted_twice_while_in_flight_counts_as_a_duplicate(server, tmp_path):
    from fetcher import Fetcher

    with Fetcher(out=str(tmp_path / "out")) as fetcher:
        first = fetcher.submit(server.url("/slow/twice.bin?delay=0.5"))
        second = fetcher.submit(server.url("/slow/twice.bin?delay=0.5"))
        assert first.result(timeout=30).path == second.result(timeout=30).path
    assert fetcher.summary.ok == 1 and fetcher.summary.duplicates == 1
    assert server.stats.snapshot()["requests"].get("/slow/twice.bin") == 1


def test_a_failed_download_leaves_no_empty_host_folder(server, tmp_path):
    from fetcher import fetch

    out = tmp_path / "out"
    [result] = list(fetch([server.url("/truncate/cut.bin?size=4000")], out=str(out), retries=0))
    assert result.error.kind == "truncated"
    assert sorted(os.listdir(out)) == [".fetcher", "manifest.jsonl"]
