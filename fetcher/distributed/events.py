"""What a worker has to tell its user, as data: the CLI decides what to print (``distributed/`` never prints)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    """How a worker's run ended; the CLI maps it to an exit status (cli_distributed.py)."""

    DONE = "done"  # the server says every URL is final
    STOPPED = "stopped"  # the server's run was interrupted
    UNREACHABLE = "unreachable"  # no broker for --give-up-after
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM here


class Kind(Enum):
    CONNECTED = "connected"
    RECONNECTED = "reconnected"
    RESTARTED = "restarted"  # the server restarted (a new epoch)
    LOST = "lost"  # the connection failed; reconnecting
    WAITING = "waiting"  # still no broker
    GAVE_UP = "gave-up"
    LEFT = "left"  # interrupted: leases returned (or not)
    ENDED = "ended"  # the run is over: what this worker did
    WARNING = "warning"  # something the user should fix (cookies missing, a dropped message)


IMPORTANT = frozenset({Kind.GAVE_UP, Kind.WARNING})  # shown even with -q


@dataclass(frozen=True)
class WorkerEvent:
    """One line's worth of news from a worker."""

    kind: Kind
    message: str

    @property
    def important(self) -> bool:
        return self.kind in IMPORTANT


EventSink = Callable[[WorkerEvent], None]


def ignore(event: WorkerEvent) -> None:
    """An EventSink that drops everything (tests, benchmarks)."""
