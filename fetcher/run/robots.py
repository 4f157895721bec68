"""``--robots``: robots.txt fetched once per (scheme, host, port) before that origin's first request.

The gate lives with the scheduler, in the coordinating process (``fetcher serve``'s, in
distributed mode), so one run asks each origin for its robots.txt once, whatever the
backend and however many workers. The scheduler asks ``verdict(url)`` before it hands a
task out:

- ``WAIT``: the origin's robots.txt is being fetched (by a small pool of threads here, so the
  input is read ahead and other hosts keep flowing); the scheduler parks the task, and
  ``resolved()`` later tells it which origins are known;
- ``ALLOW``; or a message: the URL is disallowed, or the origin's robots.txt could not be had,
  and the task becomes a failed Result of kind ``robots`` without a request.

What an answer means (RFC 9309 2.3.1): 2xx, the file's rules for our product token (see
robots_rules.py); 4xx, or too many redirects, no rules; 5xx or no answer at all (connect,
timeout, TLS), after ``--retries`` tries, nothing of that origin is fetched. robots.txt goes
through ``--proxy`` like every request, and always through requests (libcurl would block a
gevent-patched coordinator).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from fetcher.download.guards import TransferGuard
from fetcher.errors import FetchFailure
from fetcher.models import ErrorKind
from fetcher.run.waiting import WAIT
from fetcher.run.robots_rules import ALLOW_ALL, MAX_BYTES, RobotsRules
from fetcher.transports.base import Head, Request

if TYPE_CHECKING:
    from fetcher.models import FetchTask
    from fetcher.options import Options
    from fetcher.transports.base import Transport

ALLOW = "allow"
MAX_FETCHERS = 8  # robots.txt requests at once: enough to stay ahead of the downloads
MAX_ORIGINS = 100_000  # answers kept; past it the oldest is dropped (asked again if its origin comes back)


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a canonical URL, without credentials: what a robots.txt covers."""
    scheme, _, netloc = url.split("/", 3)[:3]
    return f"{scheme}//{netloc.rpartition('@')[2]}"


def target_of(url: str) -> str:
    """The path and query of a canonical URL, which robots.txt rules match."""
    parts = url.split("/", 3)
    return "/" + parts[3] if len(parts) > 3 else "/"


class Answer:
    """What an origin's robots.txt said: its rules, or why nothing may be fetched; and when it was asked."""

    __slots__ = ("rules", "refusal", "asked")

    def __init__(self, rules: RobotsRules | None, refusal: str | None, asked: float) -> None:
        self.rules, self.refusal, self.asked = rules, refusal, asked


class RobotsGate:
    """robots.txt answers for one run (see the module docstring).

    Args:
        options: the run's options (user agent, timeouts, retries, proxy, TLS).
        fetch: replaces the HTTP fetch of one origin's robots.txt (tests).
    """

    name = "robots"
    kind = ErrorKind.ROBOTS
    requests_host = True  # robots.txt is a request to the host: its politeness counts it

    def __init__(self, options: Options, fetch: FetchRobots | None = None) -> None:
        self._options = options
        self._fetch = fetch or HttpRobots(options)
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(MAX_FETCHERS, options.transport.pool)),
                                        thread_name_prefix="fetcher-robots")
        self._known: dict[str, Answer] = {}
        self._asking: set[str] = set()
        self._arrived: deque[tuple[str, Answer, float]] = deque()  # appended by the pool's threads, with when
        self.fetched = 0

    def verdict(self, url: str, addresses: tuple[str, ...] | None = None) -> str:
        """``ALLOW``, ``WAIT`` (asked, not known yet), or the reason ``url`` is not to be fetched.

        ``addresses``: the host's, from the run's resolver (dns.py), for the robots.txt request.
        """
        origin = origin_of(url)
        answer = self._known.get(origin)
        if answer is None:
            if origin not in self._asking:
                self._asking.add(origin)
                future = self._pool.submit(self._fetch, origin, addresses)
                future.add_done_callback(functools.partial(self._arrive, origin))
            return WAIT
        if answer.refusal is not None:
            return answer.refusal
        assert answer.rules is not None
        if answer.rules.allows(target_of(url)):
            return ALLOW
        return f"disallowed by {origin}/robots.txt"

    def admit(self, task: FetchTask) -> FetchTask | str:
        """``task`` if robots.txt allows it; ``WAIT``; or why not (the scheduler's gate interface)."""
        verdict = self.verdict(task.url, task.addresses)
        return task if verdict == ALLOW else verdict

    def key(self, url: str) -> str:
        return origin_of(url)

    def _arrive(self, origin: str, done: Future[Answer]) -> None:
        try:
            answer = done.result()
        except Exception as exc:  # noqa: BLE001 - a bug in a fetch must not leave the origin waiting forever
            answer = Answer(None, f"robots.txt could not be read: {type(exc).__name__}: {exc}", time.monotonic())
        self._arrived.append((origin, answer, time.monotonic()))  # the server has seen the request by now

    @property
    def asking(self) -> bool:
        """Some origin's robots.txt is still being fetched."""
        return bool(self._asking)

    def resolved(self) -> list[tuple[str, float | None, float]]:
        """Origins whose answer came since the last call (to be called by the scheduler's thread only):
        ``(origin, its Crawl-delay or None, when robots.txt's answer came)``: the host's next request
        keeps its gap (``--delay`` or Crawl-delay) from then, as after any request (gates.py)."""
        found = []
        while self._arrived:
            origin, answer, answered = self._arrived.popleft()
            self._asking.discard(origin)
            self._known[origin] = answer
            if len(self._known) > MAX_ORIGINS:
                self._known.pop(next(iter(self._known)))
            self.fetched += 1
            found.append((origin, answer.rules.crawl_delay if answer.rules is not None else None, answered))
        return found

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self._fetch, "close", None)
        if close is not None:
            close()


class FetchRobots:
    """What fetches one origin's robots.txt: ``(origin, addresses) -> Answer`` (tests pass functions)."""

    def __call__(self, origin: str, addresses: tuple[str, ...] | None = None) -> Answer:  # pragma: no cover
        raise NotImplementedError


class _Body:
    """A receiver that keeps the first MAX_BYTES of the body, then ends the transfer."""

    def __init__(self) -> None:
        self.head: Head | None = None
        self.chunks: list[bytes] = []
        self.size = 0

    def on_head(self, head: Head) -> None:
        self.head = head

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.size >= MAX_BYTES:
            raise _Enough


class _Enough(Exception):
    """MAX_BYTES of robots.txt read: the rest is never parsed (RFC 9309 2.5)."""


class HttpRobots(FetchRobots):
    """robots.txt over HTTP through requests, one transport per pool thread (``--proxy``, TLS and
    timeouts as the run's); transient failures are tried ``--retries`` more times."""

    def __init__(self, options: Options) -> None:
        self._options = options.replace(client="requests", cookies=None, headers=())
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()

    def __call__(self, origin: str, addresses: tuple[str, ...] | None = None) -> Answer:
        asked = time.monotonic()
        rules = self._options.rules
        for attempt in range(rules.retries + 1):
            body = _Body()
            try:
                self._transport().fetch(self._request(origin, addresses), body)
            except _Enough:
                pass
            except FetchFailure as failure:
                if failure.kind == ErrorKind.REDIRECT:  # RFC 9309 2.3.1.2: too many redirects, "unavailable"
                    return Answer(ALLOW_ALL, None, asked)
                if failure.retryable and attempt < rules.retries:
                    time.sleep(min(rules.backoff_cap, rules.backoff * 2 ** attempt))
                    continue
                return Answer(None, f"robots.txt unreachable: {failure.message}", asked)
            assert body.head is not None
            status = body.head.status
            if 500 <= status and attempt < rules.retries:
                time.sleep(min(rules.backoff_cap, rules.backoff * 2 ** attempt))
                continue
            return _answer(status, b"".join(body.chunks), self._options.politeness.user_agent, asked)
        raise AssertionError("unreachable: the last attempt returns")

    def _request(self, origin: str, addresses: tuple[str, ...] | None) -> Request:
        rules = self._options.rules
        guard = TransferGuard(rules.read_timeout, rules.max_time, 0, rules.min_speed_time, 0, time.monotonic())
        return Request(f"{origin}/robots.txt", {}, rules.connect_timeout, guard, addresses=addresses)

    def _transport(self) -> Transport:
        transport: Transport | None = getattr(self._local, "transport", None)
        if transport is None:
            from fetcher.transports.factory import make_session

            transport = self._local.transport = make_session(self._options)
            with self._lock:
                self._transports.append(transport)
        return transport

    def close(self) -> None:
        with self._lock:
            for transport in self._transports:
                transport.close()
            self._transports.clear()


def _answer(status: int, body: bytes, user_agent: str, asked: float) -> Answer:
    if 200 <= status < 300:
        return Answer(RobotsRules.parse(body, user_agent), None, asked)
    if 300 <= status < 500:  # 4xx: "unavailable"; a 3xx left is a redirect chain too long to follow
        return Answer(ALLOW_ALL, None, asked)
    return Answer(None, f"robots.txt unreachable: HTTP {status}", asked)
