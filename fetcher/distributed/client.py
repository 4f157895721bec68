"""A worker's connection to its broker: hello, reconnecting with jittered backoff, giving up.

Whatever the broker, a session that fails is thrown away; the next
``connect`` opens a fresh one (reconnect = a new connection, never a cached
one). ``connect`` says whether the server is the same one (a network blip) or
a new epoch (a restart), since the worker then has results to send again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fetcher.backoff import Backoff
from fetcher.distributed.broker import SessionFactory, WorkerSession
from fetcher.distributed.events import EventSink, Kind, WorkerEvent
from fetcher.distributed.protocol import Finished, Grant, LeaseId, Refusal, Wait, Welcome, WorkerInfo
from fetcher.errors import LinkError
from fetcher.errors import ConfigError

if TYPE_CHECKING:
    from fetcher.models import Result

RECONNECT = Backoff(first=0.1, cap=5.0, max_doublings=10)
FIRST, SAME, RESTARTED = "first", "same", "restarted"


class ServerConnection:
    """Talks to one broker for one worker.

    Args:
        sessions: opens a session (a connection) to the broker.
        where: the broker's address, for messages.
        info: who this worker is (sent in ``hello``).
        rpc_timeout: deadline of every call.
        on_event: where "lost", "waiting" events go.
    """

    def __init__(self, sessions: SessionFactory, where: str, info: WorkerInfo, rpc_timeout: float,
                 on_event: EventSink) -> None:
        self.where = where
        self.welcome: Welcome | None = None
        self._sessions = sessions
        self._info = info
        self._timeout = rpc_timeout
        self._emit = on_event
        self._session: WorkerSession | None = None
        self.down_since: float | None = time.monotonic()  # not connected yet counts as down
        self.next_attempt = 0.0
        self._failures = 0
        self._leaving = False

    @property
    def up(self) -> bool:
        return self._session is not None

    def connect(self, holding: list[tuple[LeaseId, str]]) -> str | None:
        """Say hello (and re-claim ``holding``: ``(lease id, URL)`` still being fetched).

        Returns FIRST, SAME or RESTARTED, or None if the broker could not be reached.

        Raises:
            ConfigError: the server refused this worker's key or version.
        """
        session = None
        try:
            session = self._sessions(self._timeout)
            reply = session.hello(self._info, holding)
        except LinkError as exc:
            if session is not None:
                session.close()
            self.lost(exc)
            return None
        if isinstance(reply, Refusal):
            session.close()
            raise ConfigError(reply.reason)
        before, self.welcome, self._session = self.welcome, reply, session
        self._failures, self.down_since = 0, None
        if before is None:
            return FIRST
        return SAME if before.epoch == reply.epoch else RESTARTED

    def lease(self, n: int) -> Grant | Wait | Finished:
        return self._do(lambda s: s.lease(self._info.id, n))  # type: ignore[no-any-return]

    def heartbeat(self, lease_ids: list[LeaseId]) -> list[LeaseId] | Finished:
        return self._do(lambda s: s.heartbeat(self._info.id, lease_ids))  # type: ignore[no-any-return]

    def complete(self, items: list[tuple[LeaseId, Result]]) -> int:
        return int(self._do(lambda s: s.complete(self._info.id, items)))

    def exchange(self, reports: list[dict[str, Any]], seen: int) -> list[dict[str, Any]]:
        return self._do(lambda s: s.exchange(self._info.id, reports, seen))  # type: ignore[no-any-return]

    def release(self, lease_ids: list[LeaseId], leaving: bool) -> int:
        return int(self._do(lambda s: s.release(self._info.id, lease_ids, leaving)))

    def _do(self, operation: Any) -> Any:
        """One operation; a LinkError also marks the connection lost (and schedules a reconnect)."""
        if self._session is None:
            raise LinkError(f"not connected to {self.where}")
        try:
            return operation(self._session)
        except LinkError as exc:
            self.lost(exc)
            raise

    def lost(self, exc: Exception) -> None:
        self.close()
        now = time.monotonic()
        if self._leaving:  # last words failed: the worker says so itself, it will not reconnect
            return
        if self.down_since is None:
            self.down_since = now
            self._emit(WorkerEvent(Kind.LOST, f"{exc}; reconnecting"))
        elif self._failures == 0:
            self._emit(WorkerEvent(Kind.WAITING, f"waiting for the server at {self.where} ({exc})"))
        self.next_attempt = now + RECONNECT.delay(self._failures)  # jittered: workers do not return in step
        self._failures += 1

    def down_for(self) -> float:
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    def fresh(self, timeout: float) -> None:
        """A new session with a short deadline, for last words (maybe interrupted mid-call before).

        Raises:
            LinkError, ConfigError: the broker cannot be reached, or refuses the key.
        """
        self.close()
        self._leaving = True
        self._session = self._sessions(timeout)
        self._session.hello(self._info, [])  # who is sending: a session knows it from hello

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
