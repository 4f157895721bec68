"""The transport seam: one HTTP GET, streamed into a receiver that may refuse it or stop it.

    fetch_one ── Download: names, resume, size caps, content checks, checksums, atomic writes
                   │ Request                       ▲ on_head(head), then write(chunk) ...
                   ▼                               │
                 Transport.fetch ── requests (default) | curl (libcurl easy handle)

A transport only moves bytes: it sends the request (headers, timeouts, proxy,
TLS, cookies, redirects limited to http/https), calls ``receiver.on_head`` once
with the final response's status and headers, then ``receiver.write`` with the
decoded body chunk by chunk. Every rule that can refuse a download lives in the
receiver, so both transports enforce the same rules by construction; whatever
the receiver raises ends the transfer and propagates unchanged. Failures of the
transfer itself come out as ``FetchFailure`` with the same kinds on both.
Model: httpx's ``BaseTransport`` (``handle_request``, ``close``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Protocol

from fetcher.redact import strip_credentials

if TYPE_CHECKING:
    from fetcher.errors import FetchFailure

# What both transports ask for and can decode (requests' default without brotli/zstd).
ACCEPT_ENCODING = "gzip, deflate"


class Deadline(Protocol):
    """What a transport asks of an attempt's deadlines (``fetch.guards.TransferGuard`` is one).

    A Protocol, so the transports need nothing from download/ above them.
    """

    read_timeout: float  # the longest silence allowed between two reads
    max_time: float  # the whole attempt's budget in seconds (0: none), from ``started``
    started: float  # monotonic time the attempt began

    def next_read_timeout(self) -> float:
        """Socket timeout for the next read; raises FetchFailure if a deadline has passed."""

    def check(self, now: float) -> None:
        """Raise FetchFailure if a deadline has passed or the transfer is too slow."""

    def timed_out(self) -> FetchFailure:
        """The failure to report for a read that hit the timeout."""


@dataclass(slots=True)
class Request:
    """One GET.

    Attributes:
        url: an http(s) URL.
        headers: headers for this request only (per-task headers, Range/If-Range,
            Accept-Encoding), on top of the transport's own (User-Agent, --header).
        connect_timeout: seconds to establish the connection.
        guard: the attempt's deadlines (``--timeout``'s read part, ``--max-time``,
            ``--min-speed``): the transport asks it how long the next read may
            wait and what failure a timed-out read is.
        chunk_size: the largest piece handed to the receiver at once.
        addresses: the URL's host's addresses, as the run's resolver found them
            (run/dns.py); None: the transport resolves the name itself (resolve.py).
    """

    url: str
    headers: dict[str, str]
    connect_timeout: float
    guard: Deadline
    chunk_size: int = 256 * 1024
    addresses: tuple[str, ...] | None = None


@dataclass(slots=True)
class Head:
    """The final response's status line and headers (after redirects).

    ``headers.get`` is case-insensitive; repeated headers are joined with ``", "``.
    """

    status: int
    reason: str
    headers: Mapping[str, str]
    url: str


class Receiver(Protocol):
    """What a transport streams into; both methods may raise to stop the transfer."""

    def on_head(self, head: Head) -> None:
        """Called once, before the first body byte (also for an empty body)."""

    def write(self, chunk: bytes) -> None:
        """Called with each non-empty chunk of the decoded body."""


class Transport(ABC):
    """Performs GETs for one worker; not shared between threads (gevent shares one per process).

    Use as a context manager, or call ``close``. A backend gets one from
    ``transports.factory.make_session(options, pool_maxsize)``, which picks the class for
    ``options.transport.client``.
    """

    client: ClassVar[str]

    @abstractmethod
    def fetch(self, request: Request, receiver: Receiver) -> Head:
        """Perform ``request``, streaming the response into ``receiver``; return its Head.

        Raises:
            FetchFailure: the transfer failed (connect, timeout, truncated, redirect...).
            Whatever ``receiver`` raised, unchanged.
        """

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Headers(dict[str, str]):
    """Response headers keyed by lower-case name, so ``get`` is case-insensitive."""

    __slots__ = ()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key.lower() if isinstance(key, str) else key)


def credentials_rule(url: str, has_authorization_header: bool) -> str:
    """The URL to send, after the one precedence both clients follow (README, Credentials).

    An explicit ``Authorization`` header (``--header``, a task's headers) beats
    credentials in the URL, which beat netrc: the header is the run's explicit
    word, and a list of URLs with credentials baked in can be fetched with
    another token without rewriting it. So with such a header the URL's
    userinfo is dropped before the client sees it (libcurl already prefers a
    custom header; requests would otherwise let the URL win).
    """
    if has_authorization_header and "@" in url:
        return strip_credentials(url)
    return url


def loop_message(chain: list[str]) -> str | None:
    """``redirect loop: a -> b -> a`` when a URL repeats in a redirect chain, else None."""
    if len(set(chain)) < len(chain):
        return f"redirect loop: {' -> '.join(chain[-4:])}"
    return None


_SCHEME_IN = re.compile(r"""(?:for '|Protocol "?)([A-Za-z][A-Za-z0-9+.-]{0,31})[:"]""")


def refused_redirect(client_message: str) -> FetchFailure:
    """A redirect to a scheme other than http(s), in the same words whichever client refused it.

    requests says "No connection adapters were found for 'file:///...'", libcurl
    'Protocol "file" is disabled (in redirect)': the scheme is taken from either.
    """
    from fetcher.errors import FetchFailure
    from fetcher.models import ErrorKind

    found = _SCHEME_IN.search(client_message)
    scheme = f"{found.group(1).lower()}:" if found else "an unknown scheme"
    return FetchFailure(ErrorKind.REDIRECT, f"redirected to an unsupported URL ({scheme}): only http and https "
                        "are followed")


def malformed_response(detail: str) -> FetchFailure:
    """A reply that is not HTTP/1.x (a bad status line, an HTTP/0.9 body, broken framing): one kind and
    one wording for both clients; retried once, as a reset connection is."""
    from fetcher.errors import FetchFailure
    from fetcher.models import ErrorKind

    detail = detail if len(detail) <= 200 else detail[:197] + "..."
    return FetchFailure(ErrorKind.CONNECT, f"malformed response: {detail}", retryable=True)
