"""A worker's connection to its server: hello, reconnecting with jittered backoff, giving up.

A Link that fails is thrown away; the next ``connect`` makes a fresh one (see
rpc.py for why BaseManager proxies cannot do this). ``connect`` says whether
the server is the same one (a network blip) or a new epoch (a restart), since
the worker then has results to send again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from fetcher import __version__
from fetcher.distributed.protocol import PROTOCOL, Refusal, Welcome, WorkerInfo, format_address
from fetcher.distributed.rpc import Link, LinkError
from fetcher.errors import ConfigError

BACKOFF_FIRST_S, BACKOFF_CAP_S = 0.1, 5.0
FIRST, SAME, RESTARTED = "first", "same", "restarted"


class ServerConnection:
    """Talks to one server address for one worker.

    Args:
        address: the server's ``(host, port)``.
        authkey: the shared key.
        info: who this worker is (sent in ``hello``).
        rpc_timeout: deadline of every call.
        log: where "lost", "waiting" lines go.
    """

    def __init__(self, address: tuple[str, int], authkey: bytes, info: WorkerInfo, rpc_timeout: float,
                 log: Callable[[str], None]) -> None:
        self.address = address
        self.where = format_address(address)
        self.welcome: Welcome | None = None
        self._authkey = authkey
        self._info = info
        self._timeout = rpc_timeout
        self._log = log
        self._link: Link | None = None
        self.down_since: float | None = time.monotonic()  # not connected yet counts as down
        self.next_attempt = 0.0
        self._failures = 0
        self._leaving = False

    @property
    def up(self) -> bool:
        return self._link is not None

    def connect(self, holding: list[tuple[int, str]]) -> str | None:
        """Say hello (and re-claim ``holding``: ``(lease id, URL)`` still being fetched).

        Returns FIRST, SAME or RESTARTED, or None if the server could not be reached.

        Raises:
            ConfigError: the server refused this worker's key or version.
        """
        try:
            link = Link(self.address, self._authkey, self._timeout)
            reply = link.call("hello", PROTOCOL, __version__, self._info)
            if isinstance(reply, Welcome) and holding:
                link.call("adopt", self._info.id, holding)
        except LinkError as exc:
            self.lost(exc)
            return None
        if isinstance(reply, Refusal):
            link.close()
            raise ConfigError(reply.reason)
        if not isinstance(reply, Welcome):
            link.close()
            self.lost(LinkError(f"the server at {self.where} answered hello with {reply!r}"))
            return None
        before, self.welcome, self._link = self.welcome, reply, link
        self._failures, self.down_since = 0, None
        if before is None:
            return FIRST
        return SAME if before.epoch == reply.epoch else RESTARTED

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """One call; a LinkError also marks the connection lost (and schedules a reconnect)."""
        if self._link is None:
            raise LinkError(f"not connected to {self.where}")
        try:
            return self._link.call(method, *args, timeout=timeout)
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
            self._log(f"{exc}; reconnecting")
        elif self._failures == 0:
            self._log(f"waiting for the server at {self.where} ({exc})")
        delay = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** min(self._failures, 10))
        self.next_attempt = now + delay * (0.5 + random.random() / 2)  # jitter: workers do not return in step
        self._failures += 1

    def down_for(self) -> float:
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    def fresh(self, timeout: float) -> None:
        """A new link with a short deadline, for last words (maybe interrupted mid-call before).

        Raises:
            LinkError, ConfigError: the server cannot be reached, or refuses the key.
        """
        self.close()
        self._leaving = True
        self._link = Link(self.address, self._authkey, timeout)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
