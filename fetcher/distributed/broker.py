"""The one broker interface under ``serve`` and ``work``, and the two brokers' addresses.

This module names no implementation: ``brokers.py`` builds them (``serve_broker``,
``worker_sessions``), so manager/ and redis/ import this interface and nothing imports back.

A broker carries leases between one ``serve`` and its workers. Two exist:

- ``ManagerSpec``: the zero-dependency default. ``serve`` itself is the broker
  (the Coordinator behind an RpcServer on ``--bind``); pickle, an authkey.
- ``RedisSpec``: a Redis server both sides reach (``--broker redis://...``).
  Leases live in Redis Streams; JSON on the wire; Redis ACLs and TLS.

Either way the same two faces:

- ``ServeBroker``: what ``serve()`` and the RemoteBackend see (offer tasks,
  collect results, how much room the workers have, finish the run);
- ``WorkerSession``: one connection of a worker (hello, lease, heartbeat,
  complete, adopt, release, stats: see protocol.py). Every method raises
  ``LinkError`` when the broker cannot be reached or does not answer within
  the deadline; the worker's ServerConnection then reconnects with backoff.

The contract tests (tests/test_distributed_contract.py) run both brokers
through the same assertions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union

from fetcher.distributed.protocol import (Finished, Grant, LeaseId, Refusal, Wait, Welcome, WorkerInfo,
                                          format_address)

if TYPE_CHECKING:
    from fetcher.models import FetchTask as Task
    from fetcher.models import Result


@dataclass(frozen=True)
class ManagerSpec:
    """``serve`` listens on ``address`` (``--bind``); workers connect there with the shared key."""

    address: tuple[str, int]
    authkey: bytes

    @property
    def where(self) -> str:
        return format_address(self.address)


@dataclass(frozen=True)
class RedisSpec:
    """A Redis server: ``url`` without a password (that comes from the environment or a file)."""

    url: str
    queue: str = "fetcher"
    password: str | None = None

    @property
    def where(self) -> str:
        return f"{self.url} (queue {self.queue})"


BrokerSpec = Union[ManagerSpec, RedisSpec]


class WorkerSession(ABC):
    """One connection from a worker to its broker. Every method may raise LinkError."""

    @abstractmethod
    def hello(self, info: WorkerInfo, holding: list[tuple[LeaseId, str]]) -> Welcome | Refusal:
        """Introduce the worker; claim back ``holding`` (lease id, URL) it still runs after a reconnect."""

    @abstractmethod
    def lease(self, worker_id: str, n: int) -> Grant | Wait | Finished:
        """Up to ``n`` tasks."""

    @abstractmethod
    def heartbeat(self, worker_id: str, lease_ids: list[LeaseId]) -> list[LeaseId] | Finished:
        """Renew leases; the ones no longer held come back."""

    @abstractmethod
    def complete(self, worker_id: str, items: list[tuple[LeaseId, Result]]) -> int:
        """Hand in finished attempts (at least once: the serve side keeps the first completion)."""

    @abstractmethod
    def release(self, worker_id: str, lease_ids: list[LeaseId], leaving: bool) -> int:
        """Give leases back now (a worker stopping)."""

    @abstractmethod
    def exchange(self, worker_id: str, reports: list[dict[str, Any]], seen: int) -> list[dict[str, Any]]:
        """Send shard reports and the last order carried out (``seen``), take the shard orders waiting
        for this worker (unchecked: the caller checks each with calls.check_order)."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """What ``fetcher status`` shows."""

    @abstractmethod
    def close(self) -> None:
        """Hang up (never raises)."""


SessionFactory = Callable[[float], WorkerSession]  # deadline of every call -> a connected session


class ServeBroker(Protocol):
    """What ``serve()`` and the RemoteBackend use, in the engine's thread (see manager/coordinator.py)."""

    heartbeat_s: float

    def start(self) -> str:
        """Open for workers; returns where they reach it (for the banner)."""

    def offer(self, task: Task) -> None: ...

    def collect(self, timeout: float | None) -> list[Result]: ...

    def room(self) -> int: ...

    def finish(self, interrupted: bool) -> None: ...

    @property
    def running(self) -> bool: ...

    def everyone_told(self) -> bool: ...

    def note_final(self, result: Result) -> None: ...

    def take_events(self) -> list[str]: ...

    lease_timeout: float
    epoch: int

    # Webdataset shards (distributed/serve_shards.py; messages: calls.py):
    def post(self, worker_id: str, order: dict[str, Any]) -> None:
        """Leave a shard order in a worker's mailbox."""

    def take_reports(self) -> list[tuple[str, dict[str, Any]]]:
        """Shard reports received (checked), as ``(worker id, report)``."""

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for reports while the engine waits for nothing else."""

    def publish_shards(self, counts: dict[str, int]) -> None:
        """Shard counts for ``fetcher status``."""

    def stats(self, gone_too: bool = False) -> dict[str, Any]:
        """Counts and live workers; ``gone_too``: also those that left or went silent (``"gone": True``)."""

    def stop(self, completed: bool) -> None:
        """Close (after the linger); ``completed``: the run ended and its journal is closed."""
