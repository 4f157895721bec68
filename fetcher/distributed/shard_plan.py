"""What ``serve`` knows of the webdataset shards its workers are writing: plain data, no broker calls.

A shard is filled by one worker with rows ``serve`` decided were final (its
scheduler settled them: retries and politeness stay global); the rows' Results
are held here, out of the journal, until the worker reports the shard whole and
``serve`` records it. Each assignment of a shard id to a worker has a ``token``;
only a report under the current token of a sealed shard can commit it.

    filling --(shard-size rows, or the run's end)--> sealed --(written)--> committed --(renamed)--> gone
       \\______________________ revoked (worker gone: rows done again) _____/
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fetcher.models import FetchTask, Result, Status, input_extra
from fetcher.run import shard_rows
from fetcher.run.shard_index import Sample


@dataclass(slots=True)
class Row:
    """One input row of a shard: its key, the Result to record once committed, and how to redo it."""

    key: str
    result: Result
    again: FetchTask | Result  # a task to fetch again, or (a worker-less failure) the Result itself
    staged: str | None  # the image's path in the worker's folder
    row: dict[str, Any]


@dataclass(slots=True)
class OpenShard:
    number: int
    token: str
    worker: str  # its id
    label: dict[str, str]  # id, host, out: where its files are
    rows: list[Row] = field(default_factory=list)
    sent: int = 0  # rows posted to the worker so far
    state: str = "filling"  # filling | sealed | committed
    since: float = field(default_factory=time.monotonic)  # opened, or sealed (or the seal posted again)
    opened: float = field(default_factory=time.monotonic)


class ShardPlan:
    """The shards not yet renamed into place, by id and by worker."""

    def __init__(self) -> None:
        self.shards: dict[int, OpenShard] = {}
        self.filling: dict[str, int] = {}  # worker id -> the shard it fills now

    def filling_for(self, worker: str) -> OpenShard | None:
        number = self.filling.get(worker)
        return None if number is None else self.shards.get(number)

    def open(self, number: int, token: str, label: dict[str, str]) -> OpenShard:
        shard = self.shards[number] = OpenShard(number, token, label["id"], label)
        self.filling[label["id"]] = number
        return shard

    def seal(self, shard: OpenShard) -> None:
        shard.state, shard.since = "sealed", time.monotonic()
        if self.filling.get(shard.worker) == shard.number:
            del self.filling[shard.worker]

    def drop(self, shard: OpenShard) -> None:
        self.shards.pop(shard.number, None)
        if self.filling.get(shard.worker) == shard.number:
            del self.filling[shard.worker]

    def current(self, number: int, token: str, worker: str, state: str) -> OpenShard | None:
        """The shard a report is about, if it is current: same token, same worker, in ``state``."""
        shard = self.shards.get(number)
        if shard is None or shard.token != token or shard.worker != worker or shard.state != state:
            return None
        return shard

    def of_workers(self, workers: set[str]) -> list[OpenShard]:
        return [shard for shard in self.shards.values() if shard.worker in workers]

    def counts(self) -> dict[str, int]:
        states = [shard.state for shard in self.shards.values()]
        return {"filling": states.count("filling"), "sealed": states.count("sealed"),
                "committing": states.count("committed"),
                "rows_held": sum(len(s.rows) for s in self.shards.values() if s.state != "committed")}


def finished(task: FetchTask, sample: Sample, home: dict[str, str] | None) -> Result:
    """A URL already in a recorded shard: skipped, with what its record said and the folder holding it."""
    shard = shard_rows.shard_stem(sample.shard) + ".tar"
    extra: dict[str, Any] = {**input_extra(task.meta), **sample.image, "key": sample.key, "shard": shard}
    if home is not None:
        extra["worker"] = home
    return Result(url=task.url, status=Status.SKIPPED, path=f"{shard}/{sample.member}", bytes=sample.bytes,
                  sha256=sample.sha256, attempts=0, index=task.index, extra=extra)


def worker_label(worker: object) -> dict[str, str] | None:
    """The ``worker`` label of a Result (id, host, out), if it is one."""
    if not isinstance(worker, dict) or not all(isinstance(worker.get(k), str) for k in ("id", "host", "out")):
        return None
    return {"id": worker["id"], "host": worker["host"], "out": worker["out"]}
