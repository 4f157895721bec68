"""The Redis serve side's book of URLs in flight: first completion wins, results deleted only once journaled."""

from __future__ import annotations

from fetcher.distributed.redis import flights
from fetcher.distributed.redis.flights import FlightBook
from fetcher.models import ErrorKind, Result, Status, failed
from fetcher.models import FetchTask as Task
from fetcher.run.journal import COMMIT_EVERY_S


def task(i: int) -> Task:
    return Task(url=f"http://h.example/f{i}", name=f"f{i}", index=i)


def ok(t: Task) -> Result:
    return Result(url=t.url, status=Status.OK, index=t.index)


def placed(book: FlightBook, t: Task, entry: str) -> None:
    assert book.offer(t) is None
    book.unplaced.remove(t.url)
    book.placed(t.url, entry)


def test_a_result_entry_is_deletable_only_once_the_journal_has_committed_all_of_it():
    book = FlightBook()
    a, b = task(0), task(1)
    placed(book, a, "1-0")
    placed(book, b, "1-1")
    book.hold("9-0", 2)  # one results entry with both
    assert book.accept("1-0", ok(a), "9-0") is not None
    assert book.accept("1-1", ok(b), "9-0") is not None
    book.final(a.url, 100.0)
    book.final(b.url, 100.0 + COMMIT_EVERY_S / 2)
    assert book.deletable == []  # no record since that could have committed them
    book.final("http://other/x", 100.0 + COMMIT_EVERY_S + flights.MARGIN_S + 0.01)
    assert book.deletable == []  # a's half is committed, b's is not yet
    book.final("http://other/y", 100.0 + 2 * COMMIT_EVERY_S + flights.MARGIN_S)
    assert book.deletable == ["9-0"]


def test_a_failure_from_an_old_lease_is_dropped_and_a_success_from_anyone_counts():
    book = FlightBook()
    t = task(0)
    placed(book, t, "1-0")
    assert book.take_back("1-0")  # expired: waiting for a new entry
    assert list(book.unplaced) == [t.url]
    book.unplaced.remove(t.url)
    book.placed(t.url, "2-0")
    book.hold("9-0", 1)
    assert book.accept("1-0", failed(t.url, ErrorKind.TIMEOUT, "late"), "9-0") is None
    assert book.deletable == ["9-0"]  # nothing in it is needed
    book.hold("9-1", 1)
    flight = book.accept("1-0", ok(t), "9-1")
    assert flight is not None and flight.entry == "2-0"  # the current lease, for serve to acknowledge
    assert len(book) == 0


def test_a_success_for_a_url_not_offered_yet_finishes_it_when_offered():
    book = FlightBook()
    t = task(3)
    book.hold("9-0", 1)
    assert book.accept("5-5", ok(t), "9-0") is None
    assert book.deletable == []  # kept, with its entry, for when the URL is offered
    kept = book.offer(t)
    assert kept is not None and kept.url == t.url and len(book) == 0
    assert book.all_read() == ["9-0"]


def test_an_entry_left_by_an_earlier_serve_is_adopted_not_added_again():
    book = FlightBook()
    t = task(0)
    book.adoptable[t.url] = "7-0"
    assert book.offer(t) is None
    assert not book.unplaced and book.by_entry == {"7-0": t.url}
