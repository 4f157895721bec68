"""``fetcher serve``: one ordinary run (journal, scheduler, collector) whose backend is the workers.

The broker (the manager's RPC server, or the run's keys in Redis) opens
before the run so that waiting workers start at once, and stays open after
it, for a bounded while, until every connected worker has been told the run
is over: no worker is left calling a server that is gone.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from fetcher.distributed import cookies
from fetcher.distributed.broker import BrokerSpec, ServeBroker
from fetcher.distributed.brokers import serve_broker
from fetcher.distributed.remote import RemoteBackend
from fetcher.models import FetchTask as Task
from fetcher.models import Result
from fetcher.run.collector import Summary
from fetcher.run.runner import Folder, Report, Workers, plan, run_to_end
from fetcher.run.journal import JOURNAL_DIR
from fetcher.options import Options
from fetcher.run.progress import Progress

RUN_ID_FILE = "run-id"
LINGER_SLACK_S = 2.0  # beyond a heartbeat interval (at most 2 s): every worker has called by then


@dataclass(frozen=True)
class ServeConfig:
    """Which broker, how long a lease lives without a heartbeat, and how the run reports (as ``fetcher``'s
    ``-v``/``-q``; ``retry_failed``: on a restart, URLs that failed before are tried again)."""

    broker: BrokerSpec
    lease_timeout: float = 60.0
    verbose: bool = False
    quiet: bool = False
    retry_failed: bool = True


@dataclass
class Served:
    """What ``serve`` returns: the run's Summary and every worker that took part (``gone``: left or
    went silent before the end, its files counted too)."""

    summary: Summary
    workers: list[dict[str, Any]]
    dropped: int = 0  # malformed broker messages dropped (serve's and the workers' own counts)
    # The run's manifest records by the worker that holds their file (None: no worker, e.g. a bad
    # input line), by status: the closing summary's figures, which add up to the manifest.
    records: dict[str | None, Counter[str]] = field(default_factory=dict)


def _tally(records: dict[str | None, Counter[str]], result: Result) -> None:
    worker = result.extra.get("worker")
    worker_id = worker.get("id") if isinstance(worker, dict) else None
    records.setdefault(worker_id if isinstance(worker_id, str) else None, Counter())[result.status.value] += 1


def _took_part(stats: dict[str, Any], records: dict[str | None, Counter[str]]) -> list[dict[str, Any]]:
    """Every worker with a record in the manifest or still connected; one known only from records
    (a restart's skipped URLs, done by a worker of the earlier serve) with what its records say."""
    workers = [w for w in stats["workers"] if w["id"] in records or not w["gone"]]
    known = {w["id"] for w in workers}
    for worker_id in records:
        if worker_id is not None and worker_id not in known:
            workers.append({"id": worker_id, "host": "?", "out": "?", "backend": "?", "pool": 0, "gone": True})
    return workers


def serve(items: Iterator[Task | Result], options: Options, progress: Progress, config: ServeConfig, *,
          total: int | None = None, on_listening: Callable[[str], None] | None = None,
          on_event: Callable[[str], None] | None = None) -> Served:
    """Serve ``items`` to workers until every one is final (or Ctrl-C), then tell them to exit.

    ``on_listening`` is called with where workers reach the broker, once it is open; ``on_event``
    (default: the progress bar's note) with each line about the workers (joined, leases expired),
    unless ``config.quiet``.

    Raises:
        ConfigError: the broker cannot be opened, another run holds the output folder, or the
            cookies file cannot be read.
    """
    rules = cookies.pack(options)  # what workers fetch by; the cookies' content, never a path on their side
    shards = options.dataset.output_format == "webdataset"
    if shards:  # does not travel as an option: the workers write what serve_shards.py orders
        rules = replace(rules, options={**rules.options, "output_format": "webdataset"})
    broker = serve_broker(config.broker, rules, _run_id(options.output.out), secrets.randbits(31),
                          config.lease_timeout, total)
    where = broker.start()
    if on_listening is not None:
        on_listening(where)
    backend = partial(RemoteBackend, coordinator=broker, on_event=None if config.quiet else on_event or progress.note)
    completed = False
    records: dict[str | None, Counter[str]] = {}

    def on_result(result: Result) -> None:
        broker.note_final(result)
        _tally(records, result)

    try:
        spec = plan(options, Report(progress, config.verbose, config.quiet, on_result=on_result),
                    Folder(retry_failed=config.retry_failed), workers=Workers(backend_factory=backend, files_here=False))
        wait_for_more = None
        if shards:  # the workers' shards instead of one written here
            from fetcher.distributed.serve_shards import ServeShards
            from fetcher.run.shards import Shards

            step = ServeShards(options, broker, (lambda line: None) if config.quiet else progress.note)
            spec = replace(spec, steps=(step, *(s for s in spec.steps if not isinstance(s, Shards))))
            wait_for_more = step.wait_for_more
        summary = run_to_end(spec, items, wait_for_more)
        # The engine has shut the backend down, which ended the run for the broker; the journal is closed.
        completed = True
        workers = _took_part(broker.stats(gone_too=True), records)
    finally:
        if broker.running:  # the run never started (e.g. the folder is in use)
            broker.finish(interrupted=True)
        try:  # also after an error: workers told to stop do not wait minutes for a server that is gone
            _linger(broker, broker.heartbeat_s + LINGER_SLACK_S)
        finally:
            broker.stop(completed)
    return Served(summary, workers, int(broker.stats(gone_too=True)["counts"].get("dropped", 0)), records)


def _linger(coordinator: ServeBroker, bound: float) -> None:
    """Wait until every connected worker has heard the run is over, at most ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not coordinator.everyone_told() and time.monotonic() < deadline:
        time.sleep(0.05)


def _run_id(out: str) -> str:
    """The id of the run in ``out``: made on the first start, the same after a restart."""
    path = os.path.join(out, JOURNAL_DIR, RUN_ID_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(4) + "\n")
    except FileExistsError:
        pass
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip() or "?"
