"""What ``serve`` knows of the URLs it put in Redis: plain data, no Redis calls, no clock of its own.

- A URL in flight is one ``Flight``: its task and the tasks-stream entry that
  leases it now (None until it is added; a new entry each time it is handed
  out again, so an entry id is leased to one worker only, ever).
- ``accept`` keeps the first completion: a success is final whoever sent it,
  a failure counts only from the current entry (an expired lease's late
  failure changes nothing).
- A success for a URL not in flight is kept (with its results-stream entry)
  and finishes the URL if it is offered: after a restart, ``serve`` reads the
  results its predecessor left before it has re-read the input.
- Results-stream entries (each carries a batch of results) are deleted only
  once the journal holds all of them: ``final`` is called right after the
  collector recorded a result, and the journal commits at the first record
  at least ``COMMIT_EVERY_S`` after an uncommitted one (run/journal.py). So a
  result recorded at ``t`` is committed at the first ``final`` at
  ``t + COMMIT_EVERY_S`` or later, or once the journal is closed. Each entry
  counts the results of it still needed; at zero it goes to ``deletable``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from fetcher.models import FetchTask as Task
from fetcher.models import Result
from fetcher.run.journal import COMMIT_EVERY_S

KEEP_LIMIT = 50_000
MARGIN_S = 0.1  # the journal reads its clock a moment before ``final`` is called


@dataclass(slots=True)
class Flight:
    task: Task
    entry: str | None = None


class FlightBook:
    """The URLs of one ``serve`` run that are in Redis."""

    def __init__(self) -> None:
        self.slots: dict[str, Flight] = {}
        self.by_entry: dict[str, str] = {}  # tasks-stream entry -> URL
        self.unplaced: deque[str] = deque()  # URLs offered (or handed out again) without an entry yet
        self.adoptable: dict[str, str] = {}  # URL -> entry an earlier serve left in the tasks stream
        self._kept: dict[str, tuple[Result, str]] = {}  # URL -> (success, its results-stream entry)
        self._uncommitted: dict[str, list[str]] = {}  # URL -> results-stream entries not yet in the journal
        self._recorded: deque[tuple[float, list[str]]] = deque()
        self._refs: dict[str, int] = {}  # results-stream entry -> its results still needed
        self.deletable: list[str] = []  # results-stream entries nothing needs any more

    def hold(self, entry: str, count: int) -> None:
        """A results-stream entry with ``count`` results is being read."""
        self._refs[entry] = self._refs.get(entry, 0) + count

    def _unref(self, entries: list[str]) -> None:
        for entry in entries:
            left = self._refs.get(entry, 0) - 1
            if left > 0:
                self._refs[entry] = left
            elif self._refs.pop(entry, None) is not None:
                self.deletable.append(entry)

    def __len__(self) -> int:
        return len(self.slots)

    def offer(self, task: Task) -> Result | None:
        """Put a task in flight; returns a kept success that finishes it instead."""
        self._unref(self._uncommitted.pop(task.url, []))  # an earlier attempt's result: the engine has it
        kept = self._kept.pop(task.url, None)
        if kept is not None:
            self._uncommitted[task.url] = [kept[1]]
            return kept[0]
        flight = self.slots[task.url] = Flight(task)
        entry = self.adoptable.pop(task.url, None)
        if entry is not None:  # a worker may be fetching it right now: keep that lease
            self._place(flight, entry)
        else:
            self.unplaced.append(task.url)
        return None

    def _place(self, flight: Flight, entry: str) -> None:
        flight.entry = entry
        self.by_entry[entry] = flight.task.url

    def placed(self, url: str, entry: str) -> None:
        """``url``'s task was added to the tasks stream as ``entry``."""
        flight = self.slots.get(url)
        if flight is not None and flight.entry is None:
            self._place(flight, entry)

    def take_back(self, entry: str) -> bool:
        """A lease expired or was released: its URL waits for a new entry. False if the entry is not current."""
        url = self.by_entry.pop(entry, None)
        flight = self.slots.get(url) if url is not None else None
        if flight is None or flight.entry != entry:
            return False
        flight.entry = None
        self.unplaced.appendleft(flight.task.url)
        return True

    def accept(self, lease: str, result: Result, result_entry: str) -> Flight | None:
        """The flight this completion (read from ``result_entry``) finishes, or None: a duplicate, or kept."""
        flight = self.slots.get(result.url)
        if flight is None:
            if result.ok:
                if result.url in self._kept:
                    self._unref([self._kept[result.url][1]])
                self._kept[result.url] = (result, result_entry)
                if len(self._kept) > KEEP_LIMIT:
                    self._unref([self._kept.pop(next(iter(self._kept)))[1]])
            else:
                self._unref([result_entry])
            return None
        if flight.entry != lease and not result.ok:
            self._unref([result_entry])
            return None
        del self.slots[result.url]
        if flight.entry is not None:
            self.by_entry.pop(flight.entry, None)
        else:
            self.unplaced.remove(result.url)  # taken back and not yet handed out again
        self._uncommitted.setdefault(result.url, []).append(result_entry)
        return flight

    def final(self, url: str, now: float) -> None:
        """The collector recorded ``url``'s final result at ``now``: what the journal now holds becomes deletable."""
        ids = self._uncommitted.pop(url, None)
        if ids:
            self._recorded.append((now, ids))
        while self._recorded and self._recorded[0][0] <= now - COMMIT_EVERY_S - MARGIN_S:
            self._unref(self._recorded.popleft()[1])

    def all_read(self) -> list[str]:
        """Every results-stream entry read and not deleted yet (once the journal is closed, none is needed)."""
        ids = list(self._refs) + self.deletable
        self._refs.clear()
        self._recorded.clear()
        self._uncommitted.clear()
        self._kept.clear()
        self.deletable = []
        return ids
