"""One DNS cache for the whole run, filled ahead of the downloads, in the coordinating process.

Without it each worker's client resolves each host it connects to: libcurl's share handle
caches names per process, requests not at all, so a run of N processes (or ``fetcher
work`` hosts) asks DNS about N times per host, and a host that does not resolve is asked
again for each of its URLs and each retry (img2dataset's users lose most of their runs to
this). Here the scheduler asks ``admit(task)`` before handing a task out:

- the first time a host is seen its name is looked up in the background (``lookups_at_once`` at
  once) while the input is read ahead and other hosts keep going; its tasks wait (``WAIT``);
- an answer rides with each of the host's tasks (``FetchTask.addresses``) to whatever process or
  host runs it, which connects there without asking DNS (transports/resolve.py, CURLOPT_RESOLVE);
- a name that does not resolve fails every URL of its host at once (kind ``dns``, no request),
  after one lookup, remembered for ``NEGATIVE_S`` (``TRANSIENT_S`` for a timeout or a refusal);
- answers are kept for their TTL, held between ``MIN_TTL_S`` and ``MAX_TTL_S``; an expired one
  is still used while it is looked up again.

Lookups go through c-ares (pycares): it reads ``/etc/hosts`` and ``/etc/resolv.conf`` as the
system does, reports TTLs, needs no root and no daemon; ``--dns-servers`` names other servers.
As getaddrinfo's ``AI_ADDRCONFIG``, it asks for IPv6 addresses (AAAA, beside A, at once) only on a
machine with an IPv6 address beyond loopback and link-local (``ipv6_configured``): elsewhere no route
reaches them, and a host costs one query, not two; there it asks for IPv6 only for a name without
an IPv4 address. Clients try each address given, so a name with both, where one family does not
answer, is still fetched (curl and requests do the same without the cache). Without pycares, ``getaddrinfo`` in threads does the lookups (it shows no TTLs:
answers are kept ``FALLBACK_TTL_S``). With a proxy the proxy resolves names, and this cache is off.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fetcher.models import ErrorKind
from fetcher.run.waiting import WAIT

if TYPE_CHECKING:
    from fetcher.models import FetchTask
    from fetcher.options import Options

MIN_TTL_S, MAX_TTL_S, FALLBACK_TTL_S = 30.0, 3600.0, 300.0
NEGATIVE_S, TRANSIENT_S = 600.0, 30.0
MAX_LOOKUPS = 1024  # c-ares keeps them all on one socket; a list of unique hosts needs many at once
MAX_NAMES = 200_000  # answers kept; past it the oldest is dropped (looked up again if it comes back)
Lookup = Callable[[str, Callable[["Answer"], None]], None]  # (name, done) -> None: calls done once, any thread


@dataclass(frozen=True, slots=True)
class Answer:
    """A name's addresses and for how long they hold, or why it has none."""

    addresses: tuple[str, ...] = ()
    ttl: float = MIN_TTL_S
    error: str | None = None
    permanent: bool = True  # the name does not exist (vs. a timeout or a refused query)


def hostname(url: str) -> str:
    """The host name of a canonical URL, lower case, without port, userinfo or IPv6 brackets."""
    netloc = url.split("/", 3)[2].rpartition("@")[2]
    if netloc.startswith("["):
        return netloc[1:].partition("]")[0]
    return netloc.rpartition(":")[0] if ":" in netloc else netloc


def is_address(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (no TLD ends in a digit, so names return at once)."""
    if not host or not (host[-1].isdigit() or ":" in host):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Entry:
    __slots__ = ("answer", "expires")

    def __init__(self, answer: Answer, expires: float) -> None:
        self.answer, self.expires = answer, expires


class DnsGate:
    """The run's names (see the module docstring). Called from the scheduler's thread only,
    but for the lookups' answers, which arrive from other threads through a deque.

    Args:
        options: ``dns_servers``, retries, the pool (which bounds lookups at once).
        lookup: replaces the resolver (tests).
        clock: monotonic seconds.
    """

    name = "dns"
    kind = ErrorKind.DNS
    requests_host = False  # a lookup asks DNS, not the host

    def __init__(self, options: Options, lookup: Lookup | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup  # made at the first name: a run of addresses never loads c-ares
        self._options = options
        # Twice the pool: a list whose every URL is another host still finds each next host resolved.
        self._at_once = lookups_at_once(options)
        self._clock = clock
        self._known: dict[str, _Entry] = {}
        self._asking: set[str] = set()
        self._queued: deque[str] = deque()  # names waiting for a free lookup slot
        self._arrived: deque[tuple[str, Answer]] = deque()
        self.lookups = 0

    def admit(self, task: FetchTask) -> FetchTask | str:
        """``task`` with its host's addresses; ``WAIT`` while they are looked up; or why it cannot be fetched."""
        host = hostname(task.url)
        if is_address(host):
            return task
        entry = self._known.get(host)
        if entry is None or entry.expires <= self._clock():
            self._ask(host)
            if entry is None:
                return WAIT
        answer = entry.answer
        if answer.error is not None:
            return f"cannot resolve {host}: {answer.error}"
        if task.addresses == answer.addresses:
            return task
        # FetchTask(*fields) with ``addresses`` (its last field) replaced: a third of dataclasses.replace's cost.
        fields: tuple[Any, ...] = task.__reduce__()[1][:-1]
        return type(task)(*fields, answer.addresses)  # type: ignore[call-arg]  # a tuple of unknown length

    def key(self, url: str) -> str:
        return hostname(url)

    def _ask(self, host: str) -> None:
        if host in self._asking:
            return
        self._asking.add(host)
        if len(self._asking) - len(self._queued) > self._at_once:
            self._queued.append(host)
            return
        self._start(host)

    def _start(self, host: str) -> None:
        self.lookups += 1
        if self._lookup is None:
            self._lookup = make_lookup(self._options)
        self._lookup(host, lambda answer: self._arrived.append((host, answer)))

    @property
    def asking(self) -> bool:
        return bool(self._asking)

    def resolved(self) -> list[tuple[str, float | None, float]]:
        """Names whose answer came since the last call: ``(name, no gap, when)``, as robots.py's gate says."""
        found: list[tuple[str, float | None, float]] = []
        now = self._clock()
        while self._arrived:
            host, answer = self._arrived.popleft()
            self._asking.discard(host)
            if answer.error is None:
                ttl = min(MAX_TTL_S, max(MIN_TTL_S, answer.ttl))
            else:
                ttl = NEGATIVE_S if answer.permanent else TRANSIENT_S
            self._known.pop(host, None)  # re-inserted last: the oldest answers go first past MAX_NAMES
            self._known[host] = _Entry(answer, now + ttl)
            if len(self._known) > MAX_NAMES:
                self._known.pop(next(iter(self._known)))
            found.append((host, None, now))
            if self._queued:
                self._start(self._queued.popleft())
        return found

    def close(self) -> None:
        close = getattr(self._lookup, "close", None)
        if close is not None:
            close()


def lookups_at_once(options: Options) -> int:
    return max(64, min(MAX_LOOKUPS, 2 * options.transport.pool))


def make_lookup(options: Options) -> Lookup:
    """c-ares if pycares imports, else ``getaddrinfo`` in threads."""
    try:
        import pycares  # noqa: F401
    except ImportError:
        return SystemLookup()
    return CaresLookup(options.transport.dns_servers)


class CaresLookup:
    """Lookups through a c-ares channel, whose own thread calls back (pycares ``event_thread``)."""

    def __init__(self, servers: tuple[str, ...] = ()) -> None:
        import pycares

        self._pycares = pycares
        kwargs: dict[str, Any] = {"timeout": 5.0, "tries": 2}
        if servers:
            kwargs["servers"] = list(servers)
        self._channel = pycares.Channel(**kwargs)
        self._first = socket.AF_UNSPEC if ipv6_configured() else socket.AF_INET
        # Not safe to call from two threads at once; reentrant: a hosts-file or cached answer calls back inside getaddrinfo
        self._lock = threading.RLock()

    def __call__(self, name: str, done: Callable[[Answer], None]) -> None:
        self._query(name, self._first, done)

    def _query(self, name: str, family: socket.AddressFamily, done: Callable[[Answer], None]) -> None:
        def answered(result: Any, error: int | None) -> None:
            if family == socket.AF_INET and error == self._pycares.errno.ARES_ENODATA:
                self._query(name, socket.AF_INET6, done)  # the name has no IPv4 address: maybe IPv6 only
                return
            done(self._answer(result, error))

        with self._lock:
            self._channel.getaddrinfo(name, None, family=family, type=socket.SOCK_STREAM, callback=answered)

    def _answer(self, result: Any, error: int | None) -> Answer:
        if error is not None:
            permanent = error in (self._pycares.errno.ARES_ENOTFOUND, self._pycares.errno.ARES_ENODATA)
            text = self._pycares.errno.strerror(error)
            return Answer(error=str(text.decode() if isinstance(text, bytes) else text).lower(), permanent=permanent)
        addresses = tuple(dict.fromkeys(_text(node.addr[0]) for node in result.nodes))
        if not addresses:
            return Answer(error="no address", permanent=True)
        return Answer(addresses, float(min(node.ttl for node in result.nodes)))

    def close(self) -> None:
        with self._lock:
            self._channel.close()


def ipv6_configured() -> bool:
    """Whether this machine has an IPv6 address of global scope (not loopback, not link-local), the
    test of glibc's ``AI_ADDRCONFIG``; where /proc does not say, whether an IPv6 route exists."""
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as handle:
            return any(len(fields) > 3 and fields[3] == "00" for fields in map(str.split, handle))
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.connect(("2001:db8::1", 9))  # UDP: a route lookup, nothing is sent
    except OSError:
        return False
    return True


def _text(address: bytes | str) -> str:
    return address.decode("ascii") if isinstance(address, bytes) else address


class SystemLookup:
    """``getaddrinfo`` in a few threads: the system's own resolution, without TTLs."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fetcher-dns")

    def __call__(self, name: str, done: Callable[[Answer], None]) -> None:
        self._pool.submit(self._resolve, name, done)

    @staticmethod
    def _resolve(name: str, done: Callable[[Answer], None]) -> None:
        try:
            found = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            permanent = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
            done(Answer(error=str(exc.strerror or exc).lower(), permanent=permanent))
            return
        except OSError as exc:
            done(Answer(error=str(exc), permanent=False))
            return
        done(Answer(tuple(dict.fromkeys(str(info[4][0]) for info in found)), FALLBACK_TTL_S))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
