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
- Results-stream entries are deleted only once the journal holds them:
  ``final`` is called right after the collector recorded a result, and the
  journal commits at the first record at least ``COMMIT_EVERY_S`` after an
  uncommitted one (journal.py). So an entry recorded at ``t`` is safe to
  delete at the first ``final`` at ``t + COMMIT_EVERY_S`` or later, or once
  the journal is closed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from fetcher.journal import COMMIT_EVERY_S
from fetcher.models import Result, Task

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

    def __len__(self) -> int:
        return len(self.slots)

    def offer(self, task: Task) -> tuple[Result | None, list[str]]:
        """Put a task in flight; returns a kept success that finishes it instead, and entries now deletable."""
        deletable = self._uncommitted.pop(task.url, [])  # an earlier attempt's result: the engine has it
        kept = self._kept.pop(task.url, None)
        if kept is not None:
            self._uncommitted[task.url] = [kept[1]]
            return kept[0], deletable
        flight = self.slots[task.url] = Flight(task)
        entry = self.adoptable.pop(task.url, None)
        if entry is not None:  # a worker may be fetching it right now: keep that lease
            self._place(flight, entry)
        else:
            self.unplaced.append(task.url)
        return None, deletable

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

    def accept(self, lease: str, result: Result, result_entry: str) -> tuple[Flight | None, bool]:
        """The flight this completion finishes (or None), and whether ``result_entry`` must stay in Redis."""
        flight = self.slots.get(result.url)
        if flight is None:
            if result.ok:
                self._kept[result.url] = (result, result_entry)
                if len(self._kept) > KEEP_LIMIT:
                    del self._kept[next(iter(self._kept))]
                return None, True
            return None, False
        if flight.entry != lease and not result.ok:
            return None, False
        del self.slots[result.url]
        if flight.entry is not None:
            self.by_entry.pop(flight.entry, None)
        else:
            self.unplaced.remove(result.url)  # taken back and not yet handed out again
        self._uncommitted.setdefault(result.url, []).append(result_entry)
        return flight, True

    def final(self, url: str, now: float) -> list[str]:
        """The collector recorded ``url``'s final result at ``now``; returns the entries the journal now holds."""
        ids = self._uncommitted.pop(url, None)
        if ids:
            self._recorded.append((now, ids))
        safe: list[str] = []
        while self._recorded and self._recorded[0][0] <= now - COMMIT_EVERY_S - MARGIN_S:
            safe.extend(self._recorded.popleft()[1])
        return safe

    def all_recorded(self) -> list[str]:
        """Every results-stream entry handed to the engine (once the journal is closed, all are in it)."""
        ids = [entry for _, entries in self._recorded for entry in entries]
        ids.extend(entry for entries in self._uncommitted.values() for entry in entries)
        self._recorded.clear()
        self._uncommitted.clear()
        return ids
