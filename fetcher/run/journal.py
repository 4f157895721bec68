"""The journal: one SQLite file per output folder, the source of truth across runs.

Every URL of every run has one row: its state (``pending``, ``ok``, ``failed``)
and its last result. A rerun of the same command reads it to skip what is done,
retry what failed and fetch what never finished; ``fetcher status`` reads it to
report. Writes are batched (a commit every ``COMMIT_EVERY_S`` seconds or
``COMMIT_EVERY_N`` results, lookups by the hundred) in WAL mode, so the journal costs little next to
the downloads; the engine also commits through a lull (``commit_if_due``, while it waits for a slow
URL), so a crash loses at most the last ~``COMMIT_EVERY_S`` seconds of results, which the next run
recovers from the files themselves (a file under its final name is complete,
across a power loss too when the run's ``--durability`` kept the order of
durability.py; the ``runs`` table records each run's level and boot for that).

Only the coordinating process touches the journal, from one thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fetcher.errors import ConfigError, StorageError
from fetcher.run.journal_secrets import mask_legacy_rows
from fetcher.models import ErrorInfo, Result, Status
from fetcher.redact import UrlKeys, mask, mask_extra, mask_optional, shown_key

JOURNAL_DIR = ".fetcher"
JOURNAL_NAME = "journal.sqlite3"
COMMIT_EVERY_S = 0.5
COMMIT_EVERY_N = 2000
_SQL_BATCH = 500  # URLs per IN (...) lookup, under SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    lines INTEGER
);
CREATE TABLE IF NOT EXISTS urls (
    url TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    run INTEGER NOT NULL,
    name TEXT,
    path TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    http_status INTEGER,
    content_type TEXT,
    final_url TEXT,
    error_kind TEXT,
    error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    elapsed_s REAL NOT NULL DEFAULT 0,
    extra TEXT,
    updated REAL NOT NULL
) WITHOUT ROWID;
"""

PENDING, OK, FAILED = "pending", "ok", "failed"


@dataclass(frozen=True, slots=True)
class Entry:
    """What the journal knew of a URL before this run saw it."""

    state: str
    name: str | None
    path: str | None
    bytes: int
    sha256: str | None
    http_status: int | None
    content_type: str | None
    final_url: str | None
    error_kind: str | None
    error_message: str | None
    attempts: int
    extra: str | None
    run: int = 0  # the run that last admitted the URL (its result is that run's, or carried by it)

    def as_result(self, url: str, status: Status, index: int = 0) -> Result:
        """This entry as a Result of the current run (e.g. ``skipped``), attempts reset to 0."""
        error = ErrorInfo(self.error_kind, self.error_message or "") if self.error_kind else None
        extra = json.loads(self.extra) if self.extra else {}
        return Result(url=url, status=status, path=self.path, bytes=self.bytes, sha256=self.sha256,
                      http_status=self.http_status, content_type=self.content_type, final_url=self.final_url,
                      error=error, attempts=0, index=index, extra=extra)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a journal written by an earlier version up to this schema (columns only ever added)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    if "lines" not in columns:
        db.execute("ALTER TABLE runs ADD COLUMN lines INTEGER")
    for column in ("durability", "boot"):  # --durability (durability.py); NULL in older runs: unknown
        if column not in columns:
            db.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")


def journal_path(out: str) -> str:
    return os.path.join(out, JOURNAL_DIR, JOURNAL_NAME)


class Journal:
    """The journal of one output folder, opened for one run.

    Args:
        out: the output folder; the journal is ``OUT/.fetcher/journal.sqlite3``.
        readonly: open an existing journal only to read it (``fetcher status``).

    Raises:
        ConfigError: the journal cannot be opened (another version, a corrupt file).
    """

    def __init__(self, out: str, readonly: bool = False) -> None:
        self.path = journal_path(out)
        if readonly and not os.path.exists(self.path):
            raise ConfigError(f"no journal in {out!r}: nothing was downloaded there")
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        # Rows are keyed by UrlKeys: a URL with credentials is stored masked, with a keyed hash.
        self._keys = UrlKeys(os.path.dirname(self.path))
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                _add_missing_columns(self._db)
                mask_legacy_rows(self._db, self._keys)
        except sqlite3.DatabaseError as exc:  # garbage, or cut short
            raise ConfigError(f"cannot open journal {self.path!r}: {exc}: it is damaged; to start over, move it "
                              f"aside (mv {self.path} {self.path}.bad): files already in the folder are kept "
                              "and not fetched again") from None
        except OSError as exc:
            raise ConfigError(f"cannot open journal {self.path!r}: {exc.strerror or exc}") from None
        self.run = 0
        self._results: list[tuple[Any, ...]] = []
        self._last_commit = time.monotonic()
        self._in_transaction = False
        self._label: tuple[object, str] = (None, "")  # the last worker label seen, and its extra's JSON

    # -- run bookkeeping -------------------------------------------------------

    def start_run(self, lines: int | None = None, durability: str | None = None, boot: str | None = None) -> int:
        """Register a new run; URLs seen by it are marked with its id.

        ``lines``: about how many lines its input has, if known (``fetcher status``
        tells how much of it an interrupted run had read). ``durability`` (its
        ``--durability``) and ``boot`` (durability.boot_id) tell a later run what a
        power loss may have taken from this one, so this row is committed with a
        sync whatever the level; after it, commits are synced (``synchronous=FULL``)
        unless the level is ``none`` (see durability.py).
        """
        self._db.execute("PRAGMA synchronous=FULL")
        with self._writing():
            cursor = self._db.execute("INSERT INTO runs (started, lines, durability, boot) VALUES (?, ?, ?, ?)",
                                      (time.time(), lines, durability, boot))
        self.run = int(cursor.lastrowid or 0)
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if durability in (None, 'none') else 'FULL'}")
        return self.run

    def run_history(self) -> list[tuple[int, str | None, str | None]]:
        """``(run, durability, boot)`` of every run, oldest first (after ``start_run``)."""
        return self._db.execute("SELECT id, durability, boot FROM runs ORDER BY id").fetchall()

    def finish_run(self) -> None:
        self._write("UPDATE runs SET finished = ? WHERE id = ?", (time.time(), self.run))
        self.commit()

    # -- writes (batched) --------------------------------------------------------

    def admit_many(self, items: list[tuple[str, str | None]], repeat: bool = False) -> list[Entry | bool]:
        """Note that this run has these ``(url, name)`` pairs, in one round trip.

        Returns, for each pair: ``True`` if the URL is new to the journal,
        ``False`` if this run already had it (a duplicate line; with
        ``repeat``, its Entry instead, for callers that ask for a URL again),
        else the Entry of an earlier run. Batched because the coordinator shares the GIL with
        busy workers: every sqlite3 call releases and re-takes it, and each
        re-take can wait a whole switch interval.
        """
        self._flush_results()  # so a URL recorded a moment ago is seen with its result
        items = [(self._keys.key(url), name) for url, name in items]
        urls = list({url: None for url, _ in items})
        known: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(urls), _SQL_BATCH):
            chunk = urls[start:start + _SQL_BATCH]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                    "SELECT url, run, state, name, path, bytes, sha256, http_status, content_type, final_url, "
                    f"error_kind, error_message, attempts, extra FROM urls WHERE url IN ({marks})", chunk):
                known[row[0]] = row[1:]
        verdicts: list[Entry | bool] = []
        fresh: list[tuple[Any, ...]] = []
        touched: list[tuple[int, str]] = []
        seen: set[str] = set()
        now = time.time()
        for url, name in items:
            row = known.get(url)
            if url in seen or (row is not None and row[0] == self.run and not repeat):
                verdicts.append(False)
            elif row is None:
                fresh.append((url, PENDING, self.run, name, now))
                verdicts.append(True)
            else:
                touched.append((self.run, url))
                verdicts.append(Entry(*(*row[1:], row[0])))  # state .. extra, then the run
            seen.add(url)
        with self._writing():
            self._begin()
            self._db.executemany("INSERT INTO urls (url, state, run, name, updated) VALUES (?, ?, ?, ?, ?)", fresh)
            self._db.executemany("UPDATE urls SET run = ? WHERE url = ?", touched)
        return verdicts

    def record(self, result: Result) -> None:
        """Store a final Result as the URL's state (``skipped`` means the file is there: ok).

        Buffered: written with the next batch (see ``COMMIT_EVERY_S``).
        """
        error = result.error
        self._results.append(
            (FAILED if result.status is Status.FAILED else OK, result.path, result.bytes, result.sha256,
             result.http_status, result.content_type, mask_optional(result.final_url), error.kind if error else None,
             mask(error.message) if error else None, result.attempts, result.elapsed_s,
             self._extra_text(result.extra) if result.extra else None, time.time(),
             self._keys.key(result.url)))
        if len(self._results) >= COMMIT_EVERY_N or time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self.commit()

    def _extra_text(self, extra: dict[str, Any]) -> str:
        # serve's results of a URL list carry only their worker's label, one dict shared by a worker's
        # results (redis/wire.py, manager/coordinator.py): its JSON is made once, not per result (issue
        # 29). The label is held here, so its identity is never another dict's.
        if len(extra) == 1 and extra.get("worker") is not None:
            if extra["worker"] is not self._label[0]:
                self._label = (extra["worker"], json.dumps(extra))
            return self._label[1]
        return json.dumps(mask_extra(extra))

    def commit_if_due(self) -> None:
        """Commit what waits, if the last commit is ``COMMIT_EVERY_S`` old: the engine calls it while it
        waits for results (engine.py's ``tick``), so through a lull (a slow last URL) the rows already
        finished reach the disk then, not when the next result comes. While results flow, ``record``
        commits first, so this adds no commit: the rate stays at most one per ``COMMIT_EVERY_S``.
        """
        if (self._results or self._in_transaction) and time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self.commit()

    def _begin(self) -> None:
        if not self._in_transaction:
            self._db.execute("BEGIN")
            self._in_transaction = True

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._writing():
            self._begin()
            self._db.execute(sql, params)

    def _flush_results(self) -> None:
        if self._results:
            rows, self._results = self._results, []
            with self._writing():
                self._begin()
                self._db.executemany(
                    "UPDATE urls SET state = ?, path = ?, bytes = ?, sha256 = ?, http_status = ?, "
                    "content_type = ?, final_url = ?, error_kind = ?, error_message = ?, attempts = ?, "
                    "elapsed_s = ?, extra = ?, updated = ? WHERE url = ?", rows)

    def commit(self) -> None:
        """Write buffered results and end the transaction.

        Raises:
            StorageError: the disk refused (full, read-only); the batch is rolled back.
        """
        self._flush_results()
        if self._in_transaction:
            with self._writing():
                self._db.execute("COMMIT")
            self._in_transaction = False
        self._last_commit = time.monotonic()

    def close(self) -> None:
        """Commit what is buffered if the disk takes it, and close (never raises StorageError:
        the run is ending anyway, and what a lost batch held is recovered by the next run)."""
        try:
            self.commit()
        except StorageError:
            pass
        finally:
            self._db.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """SQLite's "database or disk is full", "attempt to write a readonly database" (and any
        other failed write) as a StorageError, the open transaction rolled back."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            self._results.clear()
            if self._in_transaction:
                self._in_transaction = False
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolled back by itself
            raise StorageError(f"cannot write the journal {self.path!r}: {exc}") from None

    # -- reads -------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """URLs by state."""
        return dict(self._db.execute("SELECT state, COUNT(*) FROM urls GROUP BY state").fetchall())

    def top_errors(self, limit: int = 10) -> list[tuple[str, int]]:
        """The most frequent error kinds among failed URLs."""
        return self._db.execute(
            "SELECT error_kind, COUNT(*) AS n FROM urls WHERE state = ? GROUP BY error_kind "
            "ORDER BY n DESC LIMIT ?", (FAILED, limit)).fetchall()

    def runs(self) -> list[tuple[int, float, float | None]]:
        return self._db.execute("SELECT id, started, finished FROM runs ORDER BY id").fetchall()

    def last_run_input(self) -> tuple[int | None, int]:
        """The last run's input size in lines (None if unknown) and how many URLs it had read."""
        row = self._db.execute("SELECT id, lines FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None, 0
        seen = self._db.execute("SELECT COUNT(*) FROM urls WHERE run = ?", (row[0],)).fetchone()[0]
        return row[1], int(seen)

    def interrupted_before(self) -> bool:
        """True if an earlier run never finished (killed, crashed or interrupted)."""
        row = self._db.execute("SELECT COUNT(*) FROM runs WHERE finished IS NULL AND id != ?",
                               (self.run,)).fetchone()
        return bool(row[0])

    def failed_samples(self, limit: int = 5) -> Iterator[tuple[str, str, str]]:
        """(URL, kind, message) of recent failures, masked (a journal of an older version may not be)."""
        for url, kind, message in self._db.execute(
                "SELECT url, error_kind, error_message FROM urls WHERE state = ? ORDER BY updated DESC LIMIT ?",
                (FAILED, limit)):
            yield shown_key(url), kind, mask(message or "")
