"""``Fetcher.map``'s look-ahead: the pool keeps working behind a slow Result, and reading stays bounded.

``map`` yields in input order, so a slow first URL holds every later Result back.
It used to read only 4 x the pool ahead: the pool then finished those, went idle,
and each batch of Results waited for its flush before more was read (stop and go;
on 3,000 small files from nginx 97 flushes of 31 files vs 36 of 83 for ``fetch``).
Now it reads ``4 x pool + FLUSH_EVERY_N`` ahead (as ``AsyncFetcher.map``), never more.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError

import pytest
from cluster import wait_until
from server import Handler

from fetcher import Fetcher
from fetcher.download.durability import FLUSH_EVERY_N

POOL = 4
DEFAULT_AHEAD = 4 * POOL + FLUSH_EVERY_N
WAIT_S = 300  # deadline of the waits below; under load the 1,015 URLs behind the held one take ~30-90 s
READ_TIMEOUT_S = 3600  # longer than any wait: the held first URL can neither time out nor come back


class HoldFirst(Handler):
    """/held/NAME answers nothing until the test's server stops: the first Result never comes back
    during a test, however slow the machine (a sleep would end, and a read timeout with it)."""

    def _route(self, path: str, query: dict[str, str]) -> None:
        if not path.startswith("/held/"):
            super()._route(path, query)
            return
        self.server.stopping.wait()
        self.close_connection = True


def blocked_map(server, out: str, fast: int, ahead: int | None = None) -> tuple[Fetcher, Iterator[str], list[int]]:
    """A Fetcher whose map reads a first URL held back until the test ends, then ``fast`` small ones;
    returns it, the map's Result iterator and a one-item list counting the items read so far."""
    read = [0]
    server.RequestHandlerClass = HoldFirst

    def items() -> Iterator[str]:
        yield server.url("/held/head.jpg")
        for i in range(fast):
            read[0] += 1
            yield server.url(f"/files/b{i}.jpg?size=300")

    fetcher = Fetcher(out=out, pool=POOL, read_timeout=READ_TIMEOUT_S)
    return fetcher, fetcher.map(items(), **({} if ahead is None else {"ahead": ahead})), read


def fast_requests(server) -> int:
    """The fast URLs the server was asked for (each once, however often: a retry under load is not more)."""
    with server.stats.lock:  # the server's threads add paths meanwhile
        return sum(1 for path in server.stats.requests if path.startswith("/files/b"))


def run_blocked(fetcher: Fetcher, results: Iterator[str], check) -> None:
    """Start ``map`` (it blocks on the slow first Result), run ``check`` beside it, then cancel."""
    failure: list[BaseException] = []

    def watch() -> None:
        try:
            check()
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread below
            failure.append(exc)
        finally:
            fetcher.cancel()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        first = next(results)
    except CancelledError:
        first = None
    watcher.join(60)
    assert not watcher.is_alive()
    if failure:
        raise failure[0]
    assert first is None  # cancelled while the slow one was still running


def test_the_pool_keeps_downloading_behind_a_slow_first_result(server, out):
    fetcher, results, _ = blocked_map(server, out, fast=300)
    # Before: 4 x pool - 1 = 15 fast URLs fetched, then the pool idled until the slow one came back.
    run_blocked(fetcher, results, lambda: wait_until(lambda: fast_requests(server) == 300, timeout=WAIT_S,
                                                     what="the 300 URLs behind the slow one fetched"))


@pytest.mark.parametrize("ahead", [None, 10])
def test_map_reads_a_large_generator_no_further_than_ahead(server, out, ahead):
    limit = ahead or DEFAULT_AHEAD
    fetcher, results, read = blocked_map(server, out, fast=limit + 3000, ahead=ahead)

    def check() -> None:
        # Everything it read is downloaded; reading is far faster than fetching, so an unbounded
        # map would have read the whole generator by now.
        wait_until(lambda: fast_requests(server) == limit - 1, timeout=WAIT_S, what="the look-ahead fetched")
        assert read[0] <= limit  # the slow one, then limit - 1 fast ones (+ the one being read)

    run_blocked(fetcher, results, check)


@pytest.mark.parametrize("ahead", [0, -1, 2.5, True])
def test_map_refuses_a_look_ahead_below_one(tmp_path, ahead):
    """``ahead=0`` used to mean the default without a word; sync and async map now refuse it."""
    import asyncio

    from fetcher import AsyncFetcher
    from fetcher.errors import ConfigError

    with Fetcher(out=str(tmp_path / "sync")) as fetcher, pytest.raises(ConfigError, match="ahead"):
        next(fetcher.map(["http://127.0.0.1:9/x"], ahead=ahead))

    async def first() -> None:
        async with AsyncFetcher(out=str(tmp_path / "async")) as fetcher:
            async for _ in fetcher.map(["http://127.0.0.1:9/x"], ahead=ahead):
                break

    with pytest.raises(ConfigError, match="ahead"):
        asyncio.run(first())
