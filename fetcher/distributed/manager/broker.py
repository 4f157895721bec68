"""The manager broker: ``serve`` is the broker, a Coordinator behind an RpcServer on ``--bind``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fetcher.distributed.broker import ManagerSpec, WorkerSession
from fetcher.distributed.calls import check_call
from fetcher.distributed.manager.coordinator import Coordinator
from fetcher.distributed.protocol import (EXPOSED, PROTOCOL, Finished, Grant, LeaseId, Refusal, RunRules, Wait,
                                          Welcome, WorkerInfo, format_address)
from fetcher.distributed.manager.rpc import Link, RpcServer
from fetcher.errors import LinkError
from fetcher.errors import ConfigError

if TYPE_CHECKING:
    from fetcher.models import Result


class ManagerServe(Coordinator):
    """The Coordinator, plus the RpcServer that lets workers call it."""

    def __init__(self, spec: ManagerSpec, rules: RunRules, run_id: str, epoch: int, lease_timeout: float,
                 total: int | None) -> None:
        super().__init__(rules, run_id, epoch, lease_timeout, total)
        self._spec = spec
        self._server: RpcServer | None = None

    def start(self) -> str:
        """Listen; returns the bound address (the real port when ``--bind`` asked for 0).

        Raises:
            ConfigError: the address cannot be bound.
        """
        try:
            self._server = RpcServer(self, self._spec.address, self._spec.authkey, EXPOSED, check_call).start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {format_address(self._spec.address)}: "
                              f"{exc.strerror or exc}") from None
        return format_address(self._server.bound)

    def stats(self, gone_too: bool = False) -> dict[str, Any]:
        stats = super().stats(gone_too)
        if self._server is not None:  # calls the RpcServer dropped before they reached the Coordinator
            stats["counts"] = {**stats["counts"], "dropped": self._server.dropped.count}
        return stats

    def stop(self, completed: bool) -> None:
        if self._server is not None:
            self._server.stop()


class ManagerSession(WorkerSession):
    """A worker's session: one Link; each operation is one call of the Coordinator's method."""

    def __init__(self, spec: ManagerSpec, timeout: float) -> None:
        self._link = Link(spec.address, spec.authkey, timeout)

    def hello(self, info: WorkerInfo, holding: list[tuple[LeaseId, str]]) -> Welcome | Refusal:
        from fetcher import __version__

        reply = self._call("hello", PROTOCOL, __version__, info)
        if isinstance(reply, Welcome) and holding:
            self._call("adopt", info.id, holding)
        if not isinstance(reply, (Welcome, Refusal)):
            raise LinkError(f"the server answered hello with {reply!r}")
        return reply

    def lease(self, worker_id: str, n: int) -> Grant | Wait | Finished:
        reply = self._call("lease", worker_id, n)
        if not isinstance(reply, (Grant, Wait, Finished)):
            raise LinkError(f"the server answered a lease with {reply!r}")
        return reply

    def heartbeat(self, worker_id: str, lease_ids: list[LeaseId]) -> list[LeaseId] | Finished:
        reply = self._call("heartbeat", worker_id, lease_ids)
        if not isinstance(reply, (list, Finished)):
            raise LinkError(f"the server answered a heartbeat with {reply!r}")
        return reply

    def complete(self, worker_id: str, items: list[tuple[LeaseId, Result]]) -> int:
        return int(self._call("complete", worker_id, items))

    def release(self, worker_id: str, lease_ids: list[LeaseId], leaving: bool) -> int:
        return int(self._call("release", worker_id, lease_ids, leaving))

    def exchange(self, worker_id: str, reports: list[dict[str, Any]], seen: int) -> list[dict[str, Any]]:
        reply = self._call("exchange", worker_id, reports, seen)
        if not isinstance(reply, list):
            raise LinkError(f"the server answered an exchange with {reply!r:.200}")
        return reply

    def stats(self) -> dict[str, Any]:
        reply = self._call("stats")
        if not isinstance(reply, dict):
            raise LinkError(f"the server answered stats with {reply!r}")
        return reply

    def _call(self, method: str, *args: Any) -> Any:
        return self._link.call(method, *args)

    def close(self) -> None:
        self._link.close()
