"""``fetcher serve``: one ordinary run (journal, scheduler, collector) whose backend is the workers.

The RPC server starts before the run so that waiting workers connect at once,
and stays up after it, for a bounded while, until every connected worker has
been told the run is over: no worker is left calling a server that is gone.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from fetcher.run.collector import Summary
from fetcher.distributed.coordinator import Coordinator
from fetcher.distributed.protocol import EXPOSED, format_address
from fetcher.distributed.remote import RemoteBackend
from fetcher.distributed.rpc import RpcServer
from fetcher.errors import ConfigError
from fetcher.run.job import run_job
from fetcher.run.journal import JOURNAL_DIR
from fetcher.models import FetchTask as Task
from fetcher.models import Result
from fetcher.options import Options
from fetcher.run.progress import Progress

RUN_ID_FILE = "run-id"
LINGER_SLACK_S = 2.0  # beyond a heartbeat interval (at most 2 s): every worker has called by then


@dataclass(frozen=True)
class ServeConfig:
    """Where to listen, with which key, and how long a lease lives without a heartbeat."""

    bind: tuple[str, int]
    authkey: bytes
    lease_timeout: float = 60.0


@dataclass
class Served:
    """What ``serve`` returns: the run's Summary and every worker that took part (``gone``: left or
    went silent before the end, its files counted too)."""

    summary: Summary
    workers: list[dict[str, Any]]


def serve(items: Iterator[Task | Result], options: Options, progress: Progress, config: ServeConfig, *,
          total: int | None = None, on_listening: Callable[[tuple[str, int]], None] | None = None,
          verbose: bool = False, quiet: bool = False, retry_failed: bool = True) -> Served:
    """Serve ``items`` to workers until every one is final (or Ctrl-C), then tell them to exit.

    Raises:
        ConfigError: the address cannot be bound, or another run holds the output folder.
    """
    coordinator = Coordinator(options, _run_id(options.out), secrets.randbits(31), config.lease_timeout, total)
    try:
        server = RpcServer(coordinator, config.bind, config.authkey, EXPOSED).start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {format_address(config.bind)}: {exc.strerror or exc}") from None
    if on_listening is not None:
        on_listening(server.bound)
    backend = partial(RemoteBackend, coordinator=coordinator, on_event=None if quiet else progress.note)
    try:
        summary = run_job(items, options, progress, verbose=verbose, quiet=quiet, retry_failed=retry_failed,
                          on_result=coordinator.note_final, backend_factory=backend, local_files=False)
        # The engine has shut the backend down, which ended the run for the coordinator.
        workers = [w for w in coordinator.stats(gone_too=True)["workers"] if w["done"] or not w["gone"]]
    finally:
        if coordinator.running:  # the run never started (e.g. the folder is in use)
            coordinator.finish(interrupted=True)
        try:  # also after an error: workers told to stop do not wait minutes for a server that is gone
            _linger(coordinator, coordinator.heartbeat_s + LINGER_SLACK_S)
        finally:
            server.stop()
    return Served(summary, workers)


def _linger(coordinator: Coordinator, bound: float) -> None:
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
