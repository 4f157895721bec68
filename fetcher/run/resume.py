"""Between the input and the scheduler: what a rerun still has to fetch.

Each input item is checked against the journal of the output folder:
- new URL: fetched, unless its file is already under its final name (a run
  killed before its journal's last commit): then hashed and recorded;
- a duplicate line of this run: dropped (counted);
- done before and its file still there at its recorded size: ``skipped``, no request;
- done before but the file was deleted or truncated by hand: fetched again;
- failed before: fetched again, or kept as failed with ``retry_failed=False``;
- pending (an interrupted run): if its file is under its final name, that
  download finished before the crash could record it — the file is complete by
  construction (written to ``.part``, renamed only when whole), so it is hashed
  and recorded without a request; otherwise fetched, resuming its ``.part``.

A power loss breaks "complete by construction" for runs that did not flush
(``--durability none``, or journals older than the flag) and ran in an earlier
boot (durability.suspect_runs). While such a run is in the journal:
- a file it recorded as done is read back and checked against the recorded size
  and sha256 (after a reboot the read comes from the disk); a mismatch is
  removed and fetched again;
- a file under its final name without a row is kept only if it matches the
  task's expected checksum; otherwise it is removed and fetched again, since
  nothing tells a whole file from a cut one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator

from fetcher.download import durability
from fetcher.download.checksum import file_matches
from fetcher.run.journal import FAILED, OK, Entry, Journal
from fetcher.models import FetchTask, Item, Result, Status, input_extra
from fetcher.files.paths import join_within


ADMIT_BATCH = 256  # input items looked up in the journal at a time


def admit_all(items: Iterable[Item], journal: Journal, out: str, retry_failed: bool = True,
              counts: dict[str, int] | None = None, repeat: bool = False,
              local_files: bool = True) -> Iterator[Item]:
    """Filter input items through the journal; yields what this run must fetch or report.

    Items are read up to ``ADMIT_BATCH`` at a time (a ``None`` item, "nothing
    right now", ends a batch early and is passed on once it is still true), so the input stays lazy
    while the journal is asked once per batch rather than once per line. With
    ``repeat``, a URL this run already had is decided like one of an earlier
    run (skipped if its file is there) instead of dropped: for callers that
    ask for a URL again only once its first result is back. With
    ``local_files=False`` (distributed mode: the files are on the workers' hosts)
    the journal is trusted as it is: nothing is looked for under ``out``.
    """
    if counts is None:
        counts = {}
    counts.setdefault("duplicates", 0)
    # Files finished but not journaled exist only if an earlier run never finished.
    may_have_unrecorded_files = local_files and journal.interrupted_before()
    suspect = (durability.suspect_runs(journal.run_history(), journal.run, durability.boot_id())
               if local_files else set())
    tally = counts

    def admit(batch: list[FetchTask | Result]) -> Iterator[FetchTask | Result]:
        verdicts = journal.admit_many([(i.url, i.name if isinstance(i, FetchTask) else None) for i in batch], repeat)
        for item, verdict in zip(batch, verdicts, strict=True):
            if verdict is False:
                tally["duplicates"] += 1
            elif isinstance(item, Result):
                yield item
            elif verdict is True:
                # New to the journal, yet maybe on disk: a run killed between a
                # rename and the journal's next commit. The file is whole by construction.
                yield (_recover(item, out, suspect) if may_have_unrecorded_files else None) or item
            else:
                yield _decide(item, verdict, out, retry_failed, local_files, suspect)

    iterator = iter(items)
    while True:
        batch, starved, ended = _next_batch(iterator)
        if batch:
            yield from admit(batch)
        if ended:
            return
        # A None read before this batch's items were handed out may be stale by now (results
        # came back meanwhile, and the caller may have added URLs): it is passed on only when
        # a fresh read says it again, so None always means "nothing right now", never "earlier".
        if starved and not batch:
            yield None


def _next_batch(iterator: Iterator[Item]) -> tuple[list[FetchTask | Result], bool, bool]:
    """Up to ADMIT_BATCH items; then whether the input said None, and whether it ended."""
    batch: list[FetchTask | Result] = []
    for item in iterator:
        if item is None:
            return batch, True, False
        batch.append(item)
        if len(batch) >= ADMIT_BATCH:
            return batch, False, False
    return batch, False, True


def _decide(task: FetchTask, entry: Entry, out: str, retry_failed: bool, local_files: bool = True,
            suspect: frozenset[int] | set[int] = frozenset()) -> FetchTask | Result:
    if entry.state == OK:
        if not local_files or (entry.path and _still_whole(out, entry, entry.run in suspect)):
            return entry.as_result(task.url, Status.SKIPPED, task.index)
        if entry.path:
            _remove_damaged(out, entry.path)  # ours, and no longer whole: not a file for --on-exists to keep
        return task
    if entry.state == FAILED:
        return task if retry_failed else entry.as_result(task.url, Status.FAILED, task.index)
    return (_recover(task, out, suspect) if local_files else None) or task


def _still_whole(out: str, entry: Entry, read_back: bool) -> bool:
    """The recorded file is there at its size; with ``read_back``, with its sha256 too."""
    assert entry.path is not None
    if not read_back:
        return _size_on_disk(out, entry.path) == entry.bytes
    found = _hash_file(out, entry.path)
    return found is not None and found[0] == entry.bytes and entry.sha256 in (None, found[1])


def _recover(task: FetchTask, out: str, suspect: frozenset[int] | set[int] = frozenset()) -> Result | None:
    """A finished download whose result the journal lost (killed between rename and commit).

    Trusted as whole only while no suspect run (see the module's docstring) could have left it;
    else only if it matches the task's checksum, and otherwise removed, to be fetched again.
    """
    if suspect and _size_on_disk(out, task.name) is not None \
            and not (task.checksum and _matches(out, task.name, task.checksum)):
        _remove_damaged(out, task.name)
        return None
    found = _hash_file(out, task.name)
    if found is None:
        return None
    return Result(url=task.url, status=Status.SKIPPED, path=task.name, bytes=found[0], sha256=found[1],
                  attempts=0, index=task.index, extra=input_extra(task.meta))


def _hash_file(out: str, relative: str) -> tuple[int, str] | None:
    """``(size, sha256 hex)`` of a file under ``out``, None if it is not there or cannot be read."""
    try:
        target = join_within(out, relative)
        if not os.path.exists(target):  # the common case; cheaper than a failing open()
            return None
        digest = hashlib.sha256()
        size = 0
        with open(target, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                size += len(block)
    except (OSError, ValueError):
        return None
    return size, digest.hexdigest()


def _matches(out: str, relative: str, checksum: str) -> bool:
    try:
        return file_matches(join_within(out, relative), checksum)
    except (OSError, ValueError):
        return False


def _remove_damaged(out: str, relative: str) -> None:
    try:
        os.remove(join_within(out, relative))
    except (OSError, ValueError):
        pass


def _size_on_disk(out: str, relative: str) -> int | None:
    try:
        return os.path.getsize(join_within(out, relative))
    except (OSError, ValueError):
        return None
