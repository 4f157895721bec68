"""The default transport: a ``requests.Session``.

requests is what gevent's monkey-patching makes cooperative, what ``responses``
mocks in tests, and what API users configure (auth, adapters) and hand in
through ``session_factory``. The body is read with ``raw.read1``, which returns
whatever has arrived, so the receiver sees every chunk as it comes and each
read's socket timeout can be cut to the time the guard has left.

A session made by ``transports.factory.make_session`` is driven through
``Session.send`` of a ``Request.prepare()``'d request, requests' public API:
redirects, cookie persistence, hooks and the adapter's connection pool are
requests' own; only the environment lookups ``Session.request`` repeats per
request (proxies, NO_PROXY, netrc) are made once per worker (environment.py).
A caller's own session goes through ``Session.get``, exactly as they configured it.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from urllib.parse import urlsplit
from typing import TYPE_CHECKING, Any

import requests
import urllib3.exceptions
from requests.structures import CaseInsensitiveDict

from fetcher.errors import FetchFailure
from fetcher.models import ErrorKind
from fetcher.redact import has_userinfo
from fetcher.transports.base import (Head, Receiver, Request, Transport, credentials_rule, loop_message,
                                     malformed_response, refused_redirect)
from fetcher.transports.head_deadline import DeadlineAdapter, head_deadline
from fetcher.transports.resolve import remember

if TYPE_CHECKING:
    from fetcher.transports.environment import Environment


class RequestsTransport(Transport):
    """GETs through ``session``.

    Args:
        session: made by ``transports.factory.make_session`` (``trust_env`` off), or the
            caller's own, used as it is.
        environment: proxies and netrc resolved once (see environment.py);
            None for a caller's session, which keeps its own way of finding them.
    """

    client = "requests"

    def __init__(self, session: requests.Session, environment: Environment | None = None) -> None:
        self.session = session
        self._environment = environment
        self._netrc = environment is not None and environment.netrc is not None

    def fetch(self, request: Request, receiver: Receiver) -> Head:
        guard = request.guard
        deadline = guard.started + guard.max_time if guard.max_time else None
        for tries_left in (2, 1, 0):  # a pooled connection the server had closed: sent again (head_deadline.py)
            with head_deadline(deadline) as watching:
                try:
                    return self._fetch(request, receiver)
                except FetchFailure:
                    if watching.fired:  # --max-time cut a head that came too slowly
                        raise guard.timed_out() from None
                    if not (watching.stale and tries_left):
                        raise
        raise AssertionError("unreachable: the last try returns or raises")

    def _fetch(self, request: Request, receiver: Receiver) -> Head:
        with _translate_errors(request):
            with self._open(request) as response:
                head = Head(response.status_code, response.reason or "", response.headers, response.url)
                receiver.on_head(head)
                _stream(response, receiver, request)
                return head

    def _open(self, request: Request) -> requests.Response:
        timeout = (request.connect_timeout, request.guard.read_timeout)
        environment, session = self._environment, self.session
        if request.addresses:  # the run's resolver answered for this host (transports/resolve.py)
            remember(urlsplit(request.url).hostname or "", request.addresses)
        headers = CaseInsensitiveDict(session.headers)
        headers.update(request.headers)
        url = credentials_rule(request.url, "Authorization" in headers)
        if environment is None:  # the caller's session: requests' whole machinery, as they set it up
            return session.get(url, stream=True, headers=request.headers, timeout=timeout)
        proxies: dict[str, str] = {}
        if environment.proxies and (proxy := environment.proxy_for(url)):
            proxies = {"http": proxy, "https": proxy}
        # netrc only when neither a header nor the URL gives credentials, as libcurl does (NETRC_OPTIONAL).
        auth = None
        if self._netrc and "Authorization" not in headers and not has_userinfo(url):
            auth = _netrc_auth(url.split("/", 3)[2], environment.netrc)
        # Public API only: Request.prepare() with the session's headers merged under the request's
        # and the session's own cookie jar (what Session.prepare_request would merge: sessions made
        # by the factory have no auth, params or hooks of their own); send() then runs the adapter,
        # redirects and cookie persistence. Measured per request, without the network (issue 14):
        # Session.prepare_request ~190 us, this ~135 us, the PreparedRequest steps it replaced
        # (private _cookies set by hand) ~55 us; on the thread backend's small files that gap is
        # a few percent of the CPU per file, so no private API is used for it.
        prepared = requests.Request("GET", url, headers=headers, cookies=session.cookies, auth=auth).prepare()
        return session.send(prepared, stream=True, timeout=timeout, proxies=proxies, verify=session.verify,
                            cert=session.cert)

    def close(self) -> None:
        self.session.close()


class ProxyTlsAdapter(DeadlineAdapter):
    """The adapter of fetcher's sessions: head deadlines (DeadlineAdapter), and an ``https://`` proxy's
    certificate checked as the sites' are.

    urllib3 speaks TLS to an https proxy with a context of its own, which for a plain
    ``http://`` URL sent through the proxy left the proxy's certificate unchecked (an
    InsecureRequestWarning, and a run that trusted any proxy: tests/test_network_proxy.py).
    ``proxy_manager_for`` is requests' public hook for a proxy's pool manager.

    Args:
        ca_bundle: the run's CA bundle (None: certifi's), for the proxy's certificate.
        insecure: ``--insecure``: the proxy's certificate is not checked either.
    """

    def __init__(self, ca_bundle: str | None, insecure: bool, **kwargs: Any) -> None:
        self._tls = (ca_bundle, insecure)
        super().__init__(**kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        if proxy.lower().startswith("https://"):
            proxy_kwargs.setdefault("proxy_ssl_context", proxy_tls_context(*self._tls))
        return super().proxy_manager_for(proxy, **proxy_kwargs)


@lru_cache(maxsize=4)
def proxy_tls_context(ca_bundle: str | None, insecure: bool) -> ssl.SSLContext:
    # Made once per process (loading a bundle costs milliseconds) and shared: a context is thread-safe.
    """The TLS context for an https proxy: the run's CA bundle (else certifi's), or no check at all."""
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    import certifi

    return ssl.create_default_context(cafile=ca_bundle or certifi.where())


def _stream(response: requests.Response, receiver: Receiver, request: Request) -> None:
    """Hand the decoded body to ``receiver``, each read's timeout cut to what the guard allows."""
    guard = request.guard
    raw = response.raw
    sock = _socket_of(raw)
    read1, chunk_size = raw.read1, request.chunk_size
    # settimeout is an ioctl that releases the GIL: with eight threads, each release is a futex
    # round trip, so it is made only when the timeout changes (--max-time, --min-speed).
    current = sock.gettimeout() if sock is not None else None
    try:
        while True:
            if sock is not None and (timeout := guard.next_read_timeout()) != current:
                sock.settimeout(timeout)
                current = timeout
            try:
                # read1 returns what has arrived, up to chunk_size: a small body in one or two calls
                chunk = read1(chunk_size, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                raise guard.timed_out() from None
            if not chunk:
                return
            receiver.write(chunk)
    finally:
        if sock is not None and current != guard.read_timeout:
            try:
                sock.settimeout(guard.read_timeout)  # the pooled connection's next request starts afresh
            except OSError:
                pass


def _socket_of(raw: object) -> Any:
    """The socket under a urllib3 response, to cut its timeout to the deadline (None if unknown)."""
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if hasattr(sock, "settimeout") else None


@lru_cache(maxsize=1024)
def _netrc_auth(netloc: str, path: str) -> tuple[str, str] | None:
    """requests' own netrc lookup (``$NETRC``, else ``~/.netrc``: where ``path`` came from),
    once per host instead of once per request."""
    try:
        return requests.utils.get_netrc_auth(f"http://{netloc}/")
    except (UnicodeError, ValueError):  # not UTF-8: requests ignores a netrc it cannot parse, and so do we
        return None


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost reason requests wraps: "Failed to resolve 'host'" rather than
    "HTTPSConnectionPool(...): Max retries exceeded ... (Caused by ...)"."""
    reason: BaseException = exc
    for _ in range(4):  # requests error -> MaxRetryError -> NameResolutionError/NewConnectionError
        inner = getattr(reason, "reason", None) or (reason.args[0] if reason.args else None)
        if not isinstance(inner, BaseException):
            break
        reason = inner
    return reason


@contextmanager
def _translate_errors(request: Request) -> Iterator[None]:
    """Map requests/urllib3 errors to (kind, retryable) in one place; others pass through.

    Timeouts say what libcurl's transport says for the same event (issue 19's parity).
    """
    exc_module = requests.exceptions
    try:
        yield
    except exc_module.ConnectTimeout:
        raise FetchFailure(ErrorKind.TIMEOUT, f"no connection within {request.connect_timeout:g} s",
                           retryable=True) from None
    except exc_module.ReadTimeout:  # waiting for the response's head: the guard's words, as for a body read
        raise request.guard.timed_out() from None
    except exc_module.Timeout as exc:
        raise FetchFailure(ErrorKind.TIMEOUT, short(_root_cause(exc)), retryable=True) from None
    except exc_module.SSLError as exc:
        raise FetchFailure(ErrorKind.CONNECT, f"TLS error: {short(_root_cause(exc))}") from None
    except exc_module.ConnectionError as exc:
        if (bad := _bad_http(exc)) is not None:  # BadStatusLine, LineTooLong, too many headers
            raise malformed_response(_malformed(bad)) from None
        raise FetchFailure(ErrorKind.CONNECT, short(_root_cause(exc)), retryable=True) from None
    except exc_module.ChunkedEncodingError as exc:
        raise FetchFailure(ErrorKind.TRUNCATED, f"body ended early: {short(exc)}", retryable=True) from None
    except exc_module.ContentDecodingError as exc:
        raise FetchFailure(ErrorKind.BAD_CONTENT, f"cannot decode body: {short(exc)}") from None
    except exc_module.TooManyRedirects as exc:
        raise FetchFailure(ErrorKind.REDIRECT, _redirect_message(exc)) from None
    except (exc_module.InvalidSchema, exc_module.MissingSchema) as exc:
        raise refused_redirect(str(exc)) from None
    except exc_module.InvalidHeader as exc:
        if exc.args and isinstance(exc.args[0], urllib3.exceptions.HTTPError):  # the response's, not ours
            raise malformed_response(short(exc.args[0])) from None
        raise FetchFailure(ErrorKind.INVALID_URL, short(exc)) from None
    except (exc_module.InvalidURL, UnicodeError) as exc:
        raise FetchFailure(ErrorKind.INVALID_URL, short(exc)) from None
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise FetchFailure(ErrorKind.TIMEOUT, short(exc), retryable=True) from None
    except urllib3.exceptions.DecodeError as exc:
        raise FetchFailure(ErrorKind.BAD_CONTENT, f"cannot decode body: {short(exc)}") from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead) as exc:
        raise FetchFailure(ErrorKind.TRUNCATED, f"body ended early: {short(exc)}", retryable=True) from None
    except urllib3.exceptions.SSLError as exc:
        raise FetchFailure(ErrorKind.CONNECT, f"TLS error: {short(exc)}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise FetchFailure(ErrorKind.CONNECT, short(exc), retryable=True) from None


def _redirect_message(exc: requests.TooManyRedirects) -> str:
    response = exc.response
    if response is not None:
        chain = [r.url for r in response.history] + [response.url]
        loop = loop_message(chain)
        if loop:
            return loop
    return short(exc)


def _bad_http(exc: BaseException) -> http.client.HTTPException | None:
    """The http.client error a requests error wraps when the reply was not HTTP/1.x (not a hang-up)."""
    seen: list[BaseException] = [exc]
    for error in seen:  # requests -> urllib3 ProtocolError('Connection aborted.', BadStatusLine(...))
        if len(seen) > 16:
            break
        if isinstance(error, http.client.HTTPException) and not isinstance(error, http.client.RemoteDisconnected):
            return error
        seen += [a for a in (*error.args, getattr(error, "reason", None)) if isinstance(a, BaseException)]
    return None


def _malformed(cause: http.client.HTTPException) -> str:
    if isinstance(cause, http.client.BadStatusLine):
        line = str(cause.args[0]) if cause.args else ""
        return f"no HTTP/1.x status line: {line[:60]!r}"
    return short(cause)


def short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
