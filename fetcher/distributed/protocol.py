"""What ``fetcher serve`` and ``fetcher work`` say to each other, whatever the broker: plain frozen data.

The broker's operations (``broker.WorkerSession``; the manager broker calls
the Coordinator's methods of the same names, the Redis broker maps them onto
Streams):

    hello(protocol, version, info)         -> Welcome | Refusal
    lease(worker_id, n)                    -> Grant | Wait | Finished
    heartbeat(worker_id, lease_ids)        -> list[LeaseId] (leases no longer held) | Finished
    complete(worker_id, [(lease_id, Result)]) -> int (how many the broker took)
    adopt(worker_id, [(lease_id, url)])    -> int (how many it holds now; after a reconnect)
    release(worker_id, lease_ids, leaving) -> int (how many went back to the queue)
    stats()                                -> dict (for ``fetcher status``)
    exchange(worker_id, [report])          -> [order] (webdataset shards: calls.py)

The manager broker pickles these dataclasses (both ends must run the same
fetcher version; ``hello`` checks it first); the Redis broker sends them as
versioned JSON (``redis/wire.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from fetcher.errors import ConfigError

if TYPE_CHECKING:
    from fetcher.models import FetchTask as Task

PROTOCOL = 2  # 2: shard orders numbered (seq), exchange says the last seen (calls.py)
DEFAULT_PORT = 8001
LeaseId = Union[int, str]  # the manager broker's counter, or a Redis stream entry id
EXPOSED = ("hello", "lease", "heartbeat", "complete", "adopt", "release", "stats", "exchange")


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """Who a worker is; its ``label`` goes into the manifest record of every file it fetched."""

    id: str
    host: str
    pid: int
    out: str
    backend: str
    pool: int
    capacity: int  # tasks it holds at most: pool plus prefetch

    @property
    def label(self) -> dict[str, str]:
        return {"id": self.id, "host": self.host, "out": self.out}


@dataclass(frozen=True, slots=True)
class RunRules:
    """What every worker is told to fetch by: the run's options that travel (``Options.worker_form``, by
    keyword; the worker checks them again) and the content of ``--cookies``' file (cookies.py), which
    crosses the authenticated connection, never a command line."""

    options: dict[str, Any] = field(repr=False)  # headers may hold a token: never printed
    cookies_text: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Welcome:
    """The answer to ``hello``: the run's identity, its fetching rules and the lease timing.

    ``epoch`` changes each time the server starts: a worker that sees a new
    epoch knows the server restarted and that its old lease ids mean nothing.
    """

    run_id: str
    epoch: int
    rules: RunRules
    lease_timeout: float
    heartbeat_s: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """``hello`` declined (another protocol or fetcher version); ``reason`` says what to do."""

    reason: str


@dataclass(frozen=True, slots=True)
class Grant:
    """Leased tasks: ``(lease_id, task)`` pairs, each valid ``lease_timeout`` seconds unless renewed."""

    leases: list[tuple[LeaseId, Task]]
    lease_timeout: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to lease now; ask again in about ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Finished:
    """The run is over: every URL is final (``interrupted`` False), or the server was stopped."""

    interrupted: bool


def parse_address(text: str, default_host: str = "127.0.0.1", default_port: int | None = DEFAULT_PORT,
                  ) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST``, ``:PORT`` or ``[IPv6]:PORT`` as a ``(host, port)`` pair.

    Raises:
        ConfigError: not an address, or no port where one is required.
    """
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ConfigError(f"address must look like HOST:PORT or [IPV6]:PORT, not {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    host = host or default_host
    if not port_text:
        if default_port is None:
            raise ConfigError(f"address {text!r} needs a port: HOST:PORT")
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"port must be a number, not {port_text!r} (in {text!r})") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, not {port}")
    return host, port


def format_address(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
