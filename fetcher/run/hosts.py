"""Per-host politeness: concurrent-request caps, gaps between requests, pauses.

This lives in the coordinating process, next to the scheduler, so a cap holds
across every worker of a run whatever the backend (threads, processes,
greenlets or remote workers all draw their tasks from here).

A gap (``--delay``, or a robots.txt Crawl-delay) must hold where the server sees it,
not only where a task is handed out: a task may wait in a worker's queue, or behind a
lease round trip, before its request leaves, and a new connection takes longer to carry
a request than a kept-alive one. So a gapped host runs one request at a time, and the
next starts at least the gap after the previous one's grant *and* after its response's
head arrived (the worker reports how long ago that was, ``Result.after_head_s``, a
duration, so no clocks need to agree): the server had surely seen the request by then.
"""

from __future__ import annotations

from dataclasses import dataclass


def host_key(url: str) -> str:
    """The politeness key of a canonical URL: its ``host:port`` (a string split: this runs twice per URL)."""
    return url.split("/", 3)[2].rpartition("@")[2]


@dataclass
class _Host:
    active: int = 0
    next_start: float = 0.0  # earliest time the next request may start (delay, pause)


class HostLimits:
    """Who may send a request to a host now.

    Args:
        per_host: most concurrent requests to one host (0: no cap).
        delay: least seconds between the starts of two requests to one host.
    """

    def __init__(self, per_host: int, delay: float) -> None:
        self.per_host = per_host
        self.delay = delay
        self._hosts: dict[str, _Host] = {}
        self._gaps: dict[str, float] = {}  # a host's own least gap, when longer than delay (Crawl-delay)

    def blocked_until(self, host: str, now: float) -> float | None:
        """None if a request may start now; else when to look again (``inf``: at a release)."""
        state = self._hosts.get(host)
        if state is None:
            return None
        if self.per_host and state.active >= self.per_host:
            return float("inf")
        if state.active and (self._gaps.get(host, self.delay) if self._gaps else self.delay):
            return float("inf")  # a gapped host runs one request at a time: the gap counts from its answer
        return state.next_start if state.next_start > now else None

    def acquire(self, host: str, now: float) -> None:
        state = self._hosts.setdefault(host, _Host())
        state.active += 1
        gap = self._gaps.get(host, self.delay) if self._gaps else self.delay
        state.next_start = max(state.next_start, now + gap)

    def release(self, host: str, now: float, answered: float | None = None) -> None:
        """A request to ``host`` is over; ``answered``: when its response's head came (None: no response,
        or unknown; ``now`` is then taken, as the server may have seen the request until now)."""
        state = self._hosts.get(host)
        if state is None:  # never acquired (a settle without a start): nothing to free
            return
        state.active -= 1
        gap = self._gaps.get(host, self.delay) if self._gaps else self.delay
        if gap:
            state.next_start = max(state.next_start, (now if answered is None else min(answered, now)) + gap)
        if state.active == 0 and state.next_start <= now:
            del self._hosts[host]  # forget idle hosts: memory stays flat over millions of hosts

    def __len__(self) -> int:
        return len(self._hosts)

    def pause(self, host: str, until: float) -> None:
        """Hold every new request to ``host`` until ``until`` (a 429/503 Retry-After)."""
        state = self._hosts.setdefault(host, _Host())
        state.next_start = max(state.next_start, until)

    def answered(self, host: str, at: float) -> None:
        """A request to ``host`` made outside the pool (its robots.txt) was answered at ``at``:
        the next one keeps the host's gap from then, as after a pool's request (``release``)."""
        gap = self._gaps.get(host, self.delay) if self._gaps else self.delay
        if gap:
            state = self._hosts.setdefault(host, _Host())
            state.next_start = max(state.next_start, at + gap)

    def set_gap(self, host: str, gap: float, since: float) -> None:
        """Space ``host``'s requests at least ``gap`` seconds apart (if longer than ``delay``),
        counted from ``since`` too (when its robots.txt was answered)."""
        if gap <= self.delay:
            return
        self._gaps[host] = gap
        state = self._hosts.setdefault(host, _Host())
        state.next_start = max(state.next_start, since + gap)

    def forget_idle(self, now: float) -> None:
        """Drop hosts with nothing active whose gap and pause have passed."""
        for host in [h for h, s in self._hosts.items() if s.active == 0 and s.next_start <= now]:
            del self._hosts[host]
