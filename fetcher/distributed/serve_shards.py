"""``fetcher serve --output-format webdataset``: img2dataset's shards, built in the workers' folders.

The run's step (runner.Step) in ``serve``. Per-URL leases, retries and politeness
stay as for any serve run; what changes is where a final Result goes:

- ``add``: a final row (a success, whose image the worker staged in its folder, or a
  failure) becomes the next row of the shard that worker fills, under an id from
  serve's shard index (``allocate``: unique across every folder, never used twice).
  Its Result is held here, out of the journal. The rows are posted to the worker
  (its mailbox on the broker); at ``--shard-size`` rows, or when the run has
  nothing else in flight, the shard is sealed.
- The worker writes it as ``.part`` files and reports ``written``; serve records the
  shard (index: each URL's shard and key, and the worker folder holding it), posts
  ``commit`` and hands the held Results back to the run (``rejoin``) for the journal
  and the manifest. Only that record makes a shard count.
- A worker silent for ``--lease-timeout`` (killed, say) is given up: its unfinished
  shards are aborted and their rows done again by others (``rejoin`` hands the tasks
  back to the scheduler). If it comes back, its report on a shard serve gave up on
  is refused (``abort``): no sample is ever in two final shards.

A rerun of serve skips the samples of recorded shards and does the rest again (held
Results never reached the journal); failed rows of recorded shards are tried again,
and only a new success makes a new row, as on one host (run/shards.py).
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fetcher.distributed.shard_plan import OpenShard, Row, ShardPlan, finished, unshardable, worker_label
from fetcher.models import ErrorKind, FetchTask, Result, Status, failed
from fetcher.run import shard_rows
from fetcher.run.shard_index import IMAGE_FIELDS, Sample, ShardIndex, admit_batches

if TYPE_CHECKING:
    from fetcher.distributed.broker import ServeBroker
    from fetcher.options import Options

Item = FetchTask | Result | None
NOT_ROWS = frozenset({ErrorKind.CANCELLED.value, ErrorKind.STORAGE.value})  # not a URL's outcome: done again
STAGED = "staging/"
TICK_S = 0.1
LIVENESS_S = 0.25
REPOST_S = 5.0  # a seal or commit without an answer this long is posted again
MAX_GIVE_UPS = 3  # then a row fails (io, no shard): a worker that cannot write must not loop the run


class ServeShards:
    """The step; ``open`` (the folder locked) opens serve's shard index, ``wait_for_more`` is the engine's."""

    def __init__(self, options: Options, broker: ServeBroker, note: Callable[[str], None]) -> None:
        self.options, self.broker, self._note = options, broker, note
        self.size = options.dataset.shard_size
        self.index: ShardIndex | None = None
        self._plan = ShardPlan()
        self._tasks: dict[int, FetchTask] = {}  # admitted, not yet final: what a row is done again from
        self._again: deque[FetchTask | Result] = deque()  # for rejoin: tasks to redo, committed Results
        self._released: set[str] = set()  # URLs of committed Results on their way back through add
        self._failed_before: set[str] = set()
        self._homeless: list[Result] = []  # failures no worker reported (bad lines) until one has a shard
        self._last: dict[str, str] | None = None
        self._input_done = False
        self._next_tick = self._next_check = 0.0
        self._done_shards = self._stale = 0
        self._given_up: Counter[str] = Counter()  # URL -> shards of its row given up

    def open(self) -> ServeShards:
        self.index = ShardIndex(self.options.output.out)
        self._done_shards = self.index.counts()[0]
        return self

    # -- runner.Step -------------------------------------------------------------------------

    def admit(self, items: Iterator[Item]) -> Iterator[Item]:
        """Samples of recorded shards as ``skipped`` (nothing fetched); the others staged by name."""
        from fetcher.files.naming import initial_name
        from fetcher.options.dataset import STAGE_NAMING

        assert self.index is not None
        for batch in admit_batches(items):
            yield from self._admit_batch(batch, initial_name, STAGE_NAMING)

    def _admit_batch(self, batch: list[Item], initial_name: Any, naming: str) -> Iterator[Item]:
        assert self.index is not None
        found = self.index.find(item.url for item in batch if isinstance(item, FetchTask))
        for item in batch:
            if not isinstance(item, FetchTask):
                yield item
                continue
            sample = found.get(item.url)
            if sample is not None and sample.ok:
                yield finished(item, sample, self.index.home(sample.shard))
                continue
            if sample is not None:
                self._failed_before.add(sample.url)  # tried again; only a success makes a new row
            name, provisional = initial_name(item.url, item.index, naming)
            task = replace(item, name=name, provisional_name=provisional)
            self._tasks[task.index] = task
            yield task

    def rejoin(self, items: Iterator[Item]) -> Iterator[Item]:
        """The run's items, then (and in between) the Results of recorded shards and the rows to redo.

        Never ends by itself: once the input is read, it says "nothing now" until ``wait_for_more``
        (asked when nothing is in flight) says every shard is recorded."""
        iterator = iter(items)
        while True:
            self._tick()
            if self._again:
                yield self._again.popleft()
            elif not self._input_done:
                try:
                    yield next(iterator)
                except StopIteration:
                    self._input_done = True
            else:
                yield None

    def add(self, result: Result) -> Result | None:
        """Hold a final row for its worker's shard (None), or pass on what is not a new row."""
        self._tick()
        if result.url in self._released:
            self._released.discard(result.url)
            return result
        task = self._tasks.pop(result.index, None)
        staged = result.ok and result.path is not None and result.path.startswith(STAGED)
        if result.status is Status.SKIPPED and not staged:  # a sample of a finished shard (admit)
            return result
        assert self.index is not None
        if result.status is Status.FAILED and (result.error is None or result.error.kind in NOT_ROWS
                                               or self.index.identity(result.url) in self._failed_before):
            return result
        # A staged image is a new row, also ``skipped`` (a row done again by the worker that staged it)
        label = worker_label(result.extra.get("worker"))
        if result.ok and (not staged or label is None):
            return result  # not a sample a worker staged (cannot happen with our workers)
        if label is None:
            self._homeless.append(result)
            return None
        self._append(label, result, task if task is not None else result, staged)
        return None

    def close(self, completed: bool) -> None:
        if self.index is not None:
            self.index.close()

    # -- the end of the run (the engine has nothing in flight) ------------------------------------

    def wait_for_more(self, timeout: float) -> bool:
        """Seal what is open, wait for the workers' reports; False once every shard is recorded."""
        deadline = time.monotonic() + timeout
        self._house_homeless()
        for number, shard in list(self._plan.shards.items()):
            if shard.state == "filling" and shard.rows:
                self._seal(shard)
        while True:
            self._tick(force=True)
            if self._again:
                return True
            if not self._plan.shards and not self._homeless:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.broker.pump(min(left, 0.1))

    def _house_homeless(self) -> None:
        """Failures no worker reported go into a live worker's shard; with none alive, unrowed."""
        if not self._homeless:
            return
        live = [w for w in self.broker.stats(gone_too=True)["workers"] if not w.get("gone")]
        label = self._last if self._last is not None and any(w["id"] == self._last["id"] for w in live) else (
            {"id": str(live[0]["id"]), "host": str(live[0]["host"]), "out": str(live[0]["out"])} if live else None)
        homeless, self._homeless = self._homeless, []
        for result in homeless:
            if label is None:
                self._release(result)
            else:
                self._append(label, result, result, False)
        if label is None:
            self._note(f"{len(homeless)} failed rows without a worker to hold them: in the manifest, in no shard")

    # -- rows and shards -------------------------------------------------------------------

    def _append(self, label: dict[str, str], result: Result, again: FetchTask | Result, staged: bool) -> None:
        assert self.index is not None
        shard = self._plan.filling_for(label["id"])
        if shard is None:
            number = self.index.allocate()
            # The epoch first: a worker that sees a new serve keeps what the tokens of that serve name.
            shard = self._plan.open(number, f"{self.broker.epoch}.{number}.{secrets.token_hex(4)}", label)
        key = shard_rows.sample_key(shard.number, len(shard.rows), self.size)
        stem = shard_rows.shard_stem(shard.number)
        member = key + os.path.splitext(str(result.path))[1] if staged else None
        extra = {**result.extra, "key": key, "shard": stem + ".tar"}
        final = replace(result, path=f"{stem}.tar/{member}" if member else result.path, extra=extra)
        row = shard_rows.make_row(final, key, self.options)
        if "stored_width" in extra:  # for the row only: fetcher's manifest keeps its fields
            final = replace(final, extra={k: v for k, v in extra.items() if k not in ("stored_width", "stored_height")})
        shard.rows.append(Row(key, final, again, result.path if staged else None, row))
        self._last = label
        if len(shard.rows) >= self.size:
            self._seal(shard)

    def _post_rows(self, shard: OpenShard) -> None:
        rows = shard.rows[shard.sent:]
        if rows:
            self.broker.post(shard.worker, {"op": "rows", "shard": shard.number, "token": shard.token, "rows": [
                {"key": r.key, "path": r.staged, "row": r.row} for r in rows]})
            shard.sent = len(shard.rows)

    def _seal(self, shard: OpenShard) -> None:
        self._post_rows(shard)
        self.broker.post(shard.worker, {"op": "seal", "shard": shard.number, "token": shard.token,
                                        "count": len(shard.rows)})
        self._plan.seal(shard)

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if now < self._next_tick and not force:
            return
        self._next_tick = now + TICK_S
        for worker, report in self.broker.take_reports():
            self._report(worker, report)
        for shard in list(self._plan.shards.values()):
            if shard.state == "filling":
                self._post_rows(shard)
        if now >= self._next_check:
            self._next_check = now + LIVENESS_S
            self._give_up_on_the_gone(now)
        counts = self._plan.counts()
        self.broker.publish_shards({**counts, "done": self._done_shards, "stale": self._stale})

    def _give_up_on_the_gone(self, now: float) -> None:
        timeout = self.broker.lease_timeout
        workers = {w["id"]: w for w in self.broker.stats(gone_too=True)["workers"]}
        for shard in list(self._plan.shards.values()):
            if shard.state == "committed" and now - shard.opened >= timeout:
                self._plan.drop(shard)  # recorded: not worth holding the run's end longer for its rename
                continue
            if shard.state != "filling" and now - shard.since >= min(timeout, REPOST_S):
                shard.since = now  # no answer: the order (or the reply that carried it) may be lost; both
                self.broker.post(shard.worker, {"op": "seal" if shard.state == "sealed" else "commit",  # idempotent
                                                "shard": shard.number, "token": shard.token, "count": len(shard.rows)})
                continue
            seen = workers.get(shard.worker)
            if (seen is None and now - shard.opened >= timeout) or (
                    seen is not None and seen.get("gone") and float(seen.get("seen_s_ago", 0)) >= timeout):
                self._give_up(shard, f"worker {shard.worker} is gone (silent for {timeout:g} s)")

    def _give_up(self, shard: OpenShard, why: str) -> None:
        self._plan.drop(shard)
        stem = shard_rows.shard_stem(shard.number)
        if shard.state == "committed":  # recorded: its whole .part files wait for the next worker there
            self._note(f"{why} before renaming shard {stem} into place: the next `fetcher work -o "
                       f"{shard.label['out']}` on {shard.label['host']} does it")
            return
        self.broker.post(shard.worker, {"op": "abort", "shard": shard.number, "token": shard.token})
        again = 0
        for row in shard.rows:
            self._given_up[row.result.url] += 1
            if self._given_up[row.result.url] >= MAX_GIVE_UPS:
                self._release(unshardable(row, f"no shard could be written for it {MAX_GIVE_UPS} times (last: {why})"))
                continue
            if isinstance(row.again, FetchTask):
                self._tasks[row.again.index] = row.again
            self._again.append(row.again)
            again += 1
        failed_now = f"; {len(shard.rows) - again} failed (given up {MAX_GIVE_UPS}x)" if again < len(shard.rows) else ""
        self._note(f"{why}: shard {stem} given up, its {again} rows done again by others{failed_now}")

    def _report(self, worker: str, report: dict[str, Any]) -> None:
        op, number = report["op"], report["shard"]
        if op == "ask":
            self._answer_leftover(worker, number, report)
            return
        token = report["token"]
        shard = self._plan.current(number, token, worker, "committed" if op == "committed" else "sealed")
        if op == "committed":
            if shard is not None:
                self._plan.drop(shard)
            return
        if shard is None and op == "written" and self._plan.current(number, token, worker, "committed") is not None:
            self.broker.post(worker, {"op": "commit", "shard": number, "token": token})  # said twice: answer again
            return
        if shard is None and op == "written" and self._recorded_for(number, worker):
            # Recorded by the serve before this one (killed before the worker heard): rename it.
            self.broker.post(worker, {"op": "commit", "shard": number, "token": token})
        elif shard is None:  # a shard serve gave up on, or never gave this worker: it does not count
            self._stale += 1
            self.broker.post(worker, {"op": "abort", "shard": number, "token": token})
            self._note(f"refused shard {shard_rows.shard_stem(number)} from worker {worker}: it is not the "
                       "worker's current shard of that id (given up on, and done again by others)")
        elif op == "broken":
            self._give_up(shard, f"worker {worker} could not write shard ({report['why']})")
        elif report["count"] != len(shard.rows):
            self._give_up(shard, f"worker {worker} wrote {report['count']} rows of {len(shard.rows)}")
        else:
            self._commit(shard, report.get("failed") or {})

    def _recorded_for(self, number: int, worker: str) -> bool:
        assert self.index is not None
        home = self.index.home(number)
        return home is not None and home.get("id") == worker

    def _answer_leftover(self, worker: str, number: int, report: dict[str, Any]) -> None:
        assert self.index is not None
        home = self.index.home(number)
        kept = home is not None and home.get("host") == report["host"] and home.get("out") == report["out"]
        self.broker.post(worker, {"op": "commit" if kept else "abort", "shard": number, "token": ""})

    def _commit(self, shard: OpenShard, broken: dict[str, str]) -> None:
        """Record the shard (the commit point), tell the worker, and hand its Results back to the run."""
        assert self.index is not None
        samples, finals = [], []
        for row in shard.rows:
            final = row.result
            if row.key in broken:
                final = failed(final.url, ErrorKind.IO, broken[row.key].split(": ", 1)[-1], attempts=final.attempts,
                               index=final.index, extra={**final.extra})
            ok = final.ok and row.staged is not None
            member = final.path.rsplit("/", 1)[-1] if ok and final.path else None
            image: dict[str, object] = {k: final.extra[k] for k in IMAGE_FIELDS if k in final.extra}
            samples.append(Sample(self.index.identity(final.url), row.key, shard.number, member,
                                  final.bytes if ok else 0, final.sha256 if ok else None, image))
            finals.append(final)
        self.index.add(shard.number, samples, home=shard.label)
        shard.state, shard.since = "committed", time.monotonic()
        shard.opened = shard.since  # from now: how long its rename may hold the run's end
        self._done_shards += 1
        self.broker.post(shard.worker, {"op": "commit", "shard": shard.number, "token": shard.token})
        for final in finals:
            self._release(final)

    def _release(self, result: Result) -> None:
        self._released.add(result.url)
        self._again.append(result)

