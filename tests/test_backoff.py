"""One Backoff value (issue 25) behind the scheduler's retries, the reconnects and the idle polls."""

from __future__ import annotations

import random

from fetcher.backoff import Backoff
from fetcher.distributed import client
from fetcher.distributed.redis import serve as redis_serve
from fetcher.options import Options
from fetcher.run.scheduler import Scheduler


def test_it_doubles_from_first_up_to_the_cap() -> None:
    backoff = Backoff(first=0.5, cap=30.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_the_delay_is_drawn_from_the_upper_half_and_never_overflows() -> None:
    backoff = Backoff(first=0.001, cap=60.0)
    picks = random.Random(25)
    for failures in [-3, 0, 1, 2, 10, 59, 60, 61, 1024, 1025, 100_000] + [picks.randrange(5000) for _ in range(200)]:
        base = backoff.base(failures)
        assert 0.001 <= base <= 60.0
        for draw in (0.0, picks.random(), 0.999999):
            assert base / 2 <= backoff.delay(failures, lambda: draw) <= base


def test_max_doublings_stops_the_growth_before_the_cap() -> None:
    idle = Backoff(first=0.001, cap=10.0, jitter=0.0, max_doublings=6)
    assert idle.delay(6) == idle.delay(50) == 0.064


def test_the_scheduler_retries_after_the_same_backoff_whatever_the_attempt() -> None:
    scheduler = Scheduler(iter([]), Options.create(backoff=0.5, backoff_cap=30.0), jitter=lambda: 0.0)
    assert [scheduler.backoff_delay(attempt) for attempt in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert scheduler.backoff_delay(5000) == 15.0  # the old formula raised OverflowError past attempt 1024
    assert scheduler.backoff_delay(1, retry_after=7.0) == 7.0


def test_reconnects_share_one_schedule() -> None:
    assert client.RECONNECT == redis_serve.RECONNECT == Backoff(first=0.1, cap=5.0, max_doublings=10)
