"""Retry policy: backoff with jitter, the server's Retry-After, attempts bound."""

from __future__ import annotations

from fetcher.models import ErrorKind, Result, Status, FetchTask, failed
from fetcher.options import Options
from fetcher.run.scheduler import Scheduler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(tasks, **opts):
    clock = Clock()
    options = Options.create(**{"retries": 2, "backoff": 1.0, "backoff_cap": 8.0, **opts})
    return Scheduler(iter(tasks), options, clock=clock, jitter=lambda: 1.0), clock


def test_retryable_failure_comes_back_after_its_backoff():
    task = FetchTask("http://h/a", "h/a", index=0)
    sched, clock = make([task])
    assert sched.next_ready() == task
    assert sched.settle(task, failed(task, ErrorKind.CONNECT, "x", retryable=True)) is None
    assert sched.next_ready() is None  # source exhausted, retry not yet due
    assert not sched.done
    assert sched.seconds_until_next() == 1.0
    clock.now += 1.0
    retry = sched.next_ready()
    assert retry is not None and retry.attempt == 2


def test_attempts_are_bounded_by_retries():
    task = FetchTask("http://h/a", "h/a", attempt=3)  # retries=2: this was the last try
    sched, _ = make([])
    result = failed(task, ErrorKind.TIMEOUT, "x", retryable=True)
    assert sched.settle(task, result) is result


def test_permanent_failures_and_successes_are_final():
    task = FetchTask("http://h/a", "h/a")
    sched, _ = make([])
    result = failed(task, ErrorKind.HTTP_STATUS, "404", http_status=404)
    assert sched.settle(task, result) is result
    assert sched.next_ready() is None and sched.done


def test_backoff_grows_is_capped_and_jittered():
    sched, _ = make([])
    assert [sched.backoff_delay(n) for n in (1, 2, 3, 4, 5, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    low = Scheduler(iter([]), Options.create(backoff=1.0), jitter=lambda: 0.0)
    assert low.backoff_delay(1) == 0.5


def test_retry_after_is_the_delay_capped_by_max_retry_after():
    sched, _ = make([], max_retry_after=60.0)
    assert sched.backoff_delay(1, retry_after=5.0) == 5.0
    assert sched.backoff_delay(1, retry_after=500.0) == 60.0
    # The server's word, not our growing guess: a third 429 with Retry-After: 1 waits 1 s, not 4.
    assert sched.backoff_delay(3, retry_after=1.0) == 1.0
    assert sched.backoff_delay(3, retry_after=0.0) == 4.0  # "now" from a server: our backoff still spaces it


def test_retry_after_beyond_the_cap_never_retries_sooner_than_our_backoff():
    # The cap bounds how long we wait for a server, it must not shorten our own spacing:
    # with --max-retry-after 0 a 429 host was retried at once, on every attempt.
    sched, _ = make([], max_retry_after=0.0)
    assert [sched.backoff_delay(a, retry_after=120.0) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    sched, _ = make([], max_retry_after=2.0)
    assert sched.backoff_delay(4, retry_after=120.0) == 8.0  # backoff longer than the cap
    assert sched.backoff_delay(1, retry_after=120.0) == 2.0  # the cap longer than the backoff
    assert sched.backoff_delay(4, retry_after=1.5) == 1.5  # within the cap: the server's word


def test_bad_lines_pass_through_in_order():
    bad = Result(url="x", status=failed("x", ErrorKind.INVALID_URL, "m").status)
    task = FetchTask("http://h/a", "h/a")
    sched, _ = make([bad, task])
    assert sched.next_ready() is bad
    assert sched.next_ready() is task
    assert sched.next_ready() is None and sched.done


def tasks_for(hosts: list[str]):
    for i, host in enumerate(hosts):
        yield FetchTask(f"http://{host}/{i}", f"{host}/{i}", index=i)


def test_per_host_cap_parks_tasks_and_other_hosts_keep_flowing():
    sched, _ = make(tasks_for(["slow"] * 50 + ["a", "b"]), per_host=2)
    started = [sched.next_ready() for _ in range(4)]
    assert [t.url.split("/")[2] for t in started] == ["slow", "slow", "a", "b"]
    assert sched.next_ready() is None  # slow is at its cap; the rest of its tasks wait
    sched.settle(started[0], Result(url=started[0].url, status=Status.OK))
    nxt = sched.next_ready()
    assert nxt is not None and nxt.url.startswith("http://slow/")


def test_parked_tasks_are_bounded():
    pulled = 0

    def endless_one_host():
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield FetchTask(f"http://one/{i}", f"one/{i}", index=i)

    sched = Scheduler(endless_one_host(), Options.create(per_host=1), max_parked=100)
    assert sched.next_ready() is not None
    assert sched.next_ready() is None
    assert pulled <= 102


def test_delay_spaces_requests_to_one_host():
    sched, clock = make(tasks_for(["h", "h", "other"]), per_host=0, delay=2.0)
    first = sched.next_ready()
    other = sched.next_ready()
    assert first.url == "http://h/0" and other.url == "http://other/2"
    assert sched.next_ready() is None
    clock.now += 0.5
    sched.settle(first, Result(first.url, Status.OK, index=first.index, after_head_s=0.0))
    assert sched.next_ready() is None
    assert sched.seconds_until_next() == 2.0  # counted from the answer: the grant's gap would end in 1.5 s
    clock.now += 2.0
    assert sched.next_ready().url == "http://h/1"


def test_a_gapped_host_runs_one_request_at_a_time_and_counts_the_gap_from_the_answer():
    """The gap holds where the server sees it: a request that left its worker late (a queue, a
    lease round trip, a slow connect) pushes the next one back (issue 27: 0.84 s for --delay 1)."""
    sched, clock = make(tasks_for(["h", "h"]), per_host=8, delay=1.0)
    first = sched.next_ready()
    clock.now += 1.0
    assert sched.next_ready() is None  # the first is still running: the server may not have seen it yet
    clock.now += 2.0  # its head came 0.5 s before the result reached the scheduler
    sched.settle(first, Result(first.url, Status.OK, index=first.index, after_head_s=0.5))
    assert sched.next_ready() is None
    assert sched.seconds_until_next() == 0.5
    clock.now += 0.5
    assert sched.next_ready().url == "http://h/1"


def test_a_request_with_no_answer_counts_its_gap_from_its_end():
    sched, clock = make(tasks_for(["h", "h"]), per_host=8, delay=1.0, retries=0)
    first = sched.next_ready()
    clock.now += 3.0
    sched.settle(first, failed(first, ErrorKind.TIMEOUT, "no head within 30 s"))
    assert sched.next_ready() is None
    assert sched.seconds_until_next() == 1.0


def test_retry_after_pauses_the_whole_host():
    sched, clock = make(tasks_for(["h", "h", "h"]), per_host=0)
    first, second = sched.next_ready(), sched.next_ready()
    limited = failed(first, ErrorKind.HTTP_STATUS, "429", retryable=True, http_status=429, retry_after=30.0)
    assert sched.settle(first, limited) is None
    assert sched.next_ready() is None  # the third URL waits too, not only the retried one
    clock.now += 29.0
    assert sched.next_ready() is None
    clock.now += 1.0
    resumed = sched.next_ready()
    assert resumed is not None and resumed.url == "http://h/0" and resumed.attempt == 2
    assert second is not None
