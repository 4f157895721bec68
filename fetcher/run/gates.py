"""What a task must pass before the scheduler hands it out: the run's DNS answer, then robots.txt.

Each gate answers ``admit(task)`` with the task (maybe carrying something, as DNS's
addresses), ``WAIT`` (its answer for the task's host is on its way: the host's tasks stay
parked until ``resolved()`` names it), or the reason the URL is not to be fetched, which
becomes a failed Result of the gate's error kind, without a request. Both gates work in the
background (dns.py, robots.py), so the scheduler reads the input ahead and keeps other hosts
going meanwhile.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

from fetcher.models import ErrorKind, FetchTask, Result, failed
from fetcher.run.hosts import HostLimits, host_key
from fetcher.run.waiting import WAIT

if TYPE_CHECKING:
    from fetcher.options import Options


class Gate(Protocol):
    """One kind of answer a host's tasks wait for (see the module docstring)."""

    name: str
    kind: ErrorKind
    requests_host: bool  # whether its answer came from the host itself (robots.txt): a request to it

    def admit(self, task: FetchTask) -> FetchTask | str: ...

    def key(self, url: str) -> str: ...

    @property
    def asking(self) -> bool: ...

    def resolved(self) -> list[tuple[str, float | None, float]]: ...

    def close(self) -> None: ...


def from_options(options: Options) -> list[Gate]:
    """The gates a run's options ask for: DNS unless off or behind a proxy, robots.txt with ``--robots``."""
    gates: list[Gate] = []
    if options.transport.dns_cache and not options.transport.proxy and not _environment_proxies():
        from fetcher.run.dns import DnsGate

        gates.append(DnsGate(options))
    if options.politeness.robots:
        from fetcher.run.robots import RobotsGate

        gates.append(RobotsGate(options))
    return gates


def _environment_proxies() -> bool:
    """Whether a proxy variable is set: a proxy resolves names itself, so the run's cache would ask in vain."""
    # Not urllib.request's getproxies_environment: importing it costs a tenth of start-up (issue 29).
    return any(name[-6:].lower() == "_proxy" and name.lower() != "no_proxy" and value
               for name, value in os.environ.items())


class Gates:
    """The gates of one run, and the hosts parked on each of their answers."""

    def __init__(self, gates: list[Gate]) -> None:
        self._gates = gates
        self._waiting: dict[tuple[str, str], set[str]] = {}  # (gate, key) -> hosts parked until its answer

    def __bool__(self) -> bool:
        return bool(self._gates)

    def admit(self, task: FetchTask, host: str) -> FetchTask | Result | None:
        """``task`` as every gate let it through; a failed Result; or None: ``host`` waits for an answer."""
        for gate in self._gates:
            outcome = gate.admit(task)
            if isinstance(outcome, FetchTask):
                task = outcome
            elif outcome == WAIT:
                self._waiting.setdefault((gate.name, gate.key(task.url)), set()).add(host)
                return None
            else:
                return failed(task, gate.kind, outcome, attempts=task.attempt - 1)
        return task

    def arrived(self, limits: HostLimits, longest_gap: float) -> list[str]:
        """Hosts whose awaited answers came; a gap an answer asks for (Crawl-delay) is set on ``limits``,
        and an answer the host gave (robots.txt) counts as its request: the next waits the gap from it."""
        hosts: list[str] = []
        for gate in self._gates:
            for key, gap, since in gate.resolved():
                if gap:
                    limits.set_gap(host_key(key + "/"), min(gap, longest_gap), since)
                if gate.requests_host:
                    limits.answered(host_key(key + "/"), since)
                hosts.extend(self._waiting.pop((gate.name, key), ()))
        return hosts

    @property
    def asking(self) -> bool:
        return any(gate.asking for gate in self._gates)

    def close(self) -> None:
        for gate in self._gates:
            gate.close()
