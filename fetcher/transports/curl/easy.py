"""The libcurl transport (``--client curl``): one pycurl easy handle per worker.

libcurl does the connection, TLS, redirects, decoding and the transfer in C
with the GIL released; Python runs only in the callbacks (one call per header
line, one per body chunk). The handle is reused, so is its connection cache.

How each rule maps onto libcurl:
- redirects: FOLLOWLOCATION with MAXREDIRS = ``--max-redirects``; PROTOCOLS
  and REDIR_PROTOCOLS http,https, so a redirect to ``file://`` is refused.
- deadlines: CONNECTTIMEOUT_MS, TIMEOUT_MS = ``--max-time``; the read timeout
  (longest silence) and ``--min-speed`` by the same ``TransferGuard`` the
  requests transport uses, asked by ``overdue``: from the progress callback
  under ``perform``, or from the multi driver's tick (transports/curl/multi.py), which
  turns the callback off. Not LOW_SPEED_LIMIT 1 byte/s: that is an average
  speed, rounded down, so a server sending a byte a second (data every second,
  never silent) was cut as "no data for 5 s" and retried, where requests let it
  run to ``--max-time`` (issue 19).
- size caps, content checks, checksums, cancel: in the receiver, per chunk,
  exactly as with requests; raising there aborts the transfer (CURLE_WRITE_ERROR)
  and the exception is re-raised from ``fetch``. Bodies are decoded by libcurl
  (ACCEPT_ENCODING), so caps count decoded bytes and a gzip bomb stops at the cap.
- cookies file, ``--insecure``, CA bundle, proxies, netrc: from the options and
  the environment read once (environment.py), as for requests.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import pycurl

from fetcher.errors import FetchFailure
from fetcher.models import ErrorKind
from fetcher.transports.base import (ACCEPT_ENCODING, Head, Headers, Receiver, Request, Transport,
                                     credentials_rule, loop_message, malformed_response, refused_redirect)
from fetcher.transports.curl import quickack
from fetcher.transports.curl import share as curl_share
from fetcher.transports.environment import Environment

if TYPE_CHECKING:
    from fetcher.options import Options

MAX_BUFFER_SIZE = 10 * 1024 * 1024  # libcurl's largest receive buffer (CURL_MAX_READ_SIZE)
_HTTP_ONLY = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS
# --http-version: "" is libcurl's default, HTTP/2 where TLS's ALPN agrees, else 1.1 (as "2": never prior knowledge)
_HTTP_VERSIONS = {"": pycurl.CURL_HTTP_VERSION_2TLS, "2": pycurl.CURL_HTTP_VERSION_2TLS,
                  "1.1": pycurl.CURL_HTTP_VERSION_1_1}

# libcurl error codes -> (kind, retryable, message prefix); see fetch() for the special ones.
_CONNECT_ERRORS = {pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_PROXY,
                   pycurl.E_GOT_NOTHING, pycurl.E_SEND_ERROR, pycurl.E_RECV_ERROR}
_WEIRD_SERVER_REPLY = 8  # CURLE_WEIRD_SERVER_REPLY (pycurl names it only E_FTP_WEIRD_SERVER_REPLY)
_TLS_ERRORS = {pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CERTPROBLEM,
               pycurl.E_SSL_CIPHER, pycurl.E_SSL_CACERT_BADFILE, pycurl.E_SSL_ISSUER_ERROR,
               pycurl.E_SSL_PINNEDPUBKEYNOTMATCH, pycurl.E_SSL_INVALIDCERTSTATUS}


class CurlTransport(Transport):
    """GETs through one reused libcurl easy handle (``curl``).

    ``fetch`` performs a request in the calling thread. The multi backend runs
    many of these at once in one thread instead: ``start``, then libcurl's multi
    interface drives ``curl``, then ``finish`` with the transfer's result code.

    Args:
        options: user agent, ``--header``, cookies, ``--insecure``, redirects,
            timeouts, ``--http-version`` (only what holds for every request of the run).
        environment: proxies, CA bundle and netrc, read once.
        driven: the handle goes on a multi handle whose driver calls ``overdue``
            (no progress callback), and waits for a connection that may multiplex
            (PIPEWAIT) rather than opening one per transfer.
    """

    client = "curl"

    def __init__(self, options: Options, environment: Environment, driven: bool = False) -> None:
        self.curl = curl = pycurl.Curl()
        self._options, self._driven = options, driven
        self._may_multiplex, self._pipewait = driven and options.transport.http_version != "1.1", False
        self._environment = environment
        self._base_headers = {name.lower(): f"{name}: {value}" for name, value in options.politeness.headers}
        self._lines: list[bytes] = []  # header lines of every response of the current request
        self._receiver: Receiver | None = None
        self._head: Head | None = None
        self._error: BaseException | None = None
        self._socket: int | None = None  # the connection of the current request (quickack.py)
        self._set_fixed_options(curl, options, environment)
        self._set_driving(curl, options)
        self._sent: tuple[list[str] | None, str | None] = (None, None)  # HTTPHEADER and ACCEPT_ENCODING in force
        self._resolved = ""  # the CURLOPT_RESOLVE entry last given

    def _set_fixed_options(self, curl: pycurl.Curl, options: Options, env: Environment) -> None:
        curl.setopt(pycurl.NOSIGNAL, 1)  # threads: never use signals for timeouts
        curl.setopt(pycurl.FOLLOWLOCATION, 1)
        curl.setopt(pycurl.MAXREDIRS, options.rules.max_redirects)
        curl.setopt(pycurl.PROTOCOLS, _HTTP_ONLY)
        curl.setopt(pycurl.REDIR_PROTOCOLS, _HTTP_ONLY)
        curl.setopt(pycurl.USERAGENT, options.politeness.user_agent)
        # The receive buffer bounds each write callback: chunk_size, as for requests' reads.
        curl.setopt(pycurl.BUFFERSIZE, min(max(options.transport.chunk_size, 1024), MAX_BUFFER_SIZE))
        curl.setopt(pycurl.HEADERFUNCTION, self._lines.append)
        if quickack.ENABLED:  # see quickack.py: no 40 ms stall per request on a reused connection
            curl.setopt(pycurl.HEADERFUNCTION, self._on_header)
            curl.setopt(pycurl.SOCKOPTFUNCTION, quickack.on_socket)
            curl.setopt(pycurl.PREREQFUNCTION, self._on_prereq)
        curl.setopt(pycurl.WRITEFUNCTION, self._on_write)
        curl.setopt(pycurl.COOKIEFILE, options.politeness.cookies or "")  # "": the cookie engine on, as a Session's jar
        if options.politeness.insecure:
            curl.setopt(pycurl.SSL_VERIFYPEER, 0)
            curl.setopt(pycurl.SSL_VERIFYHOST, 0)
            curl.setopt(pycurl.PROXY_SSL_VERIFYPEER, 0)  # an https:// proxy's certificate too, as requests does
            curl.setopt(pycurl.PROXY_SSL_VERIFYHOST, 0)
        else:
            curl.setopt(pycurl.CAINFO, env.ca_bundle or _certifi_bundle())
            curl.setopt(pycurl.PROXY_CAINFO, env.ca_bundle or _certifi_bundle())  # the same roots for the proxy
        if options.rules.max_time:
            curl.setopt(pycurl.TIMEOUT_MS, max(1, int(options.rules.max_time * 1000)))
        curl.setopt(pycurl.PROXY, "")  # "": no proxy, and libcurl never reads the environment itself
        if env.proxies:
            curl.setopt(pycurl.NOPROXY, env.no_proxy)  # also applies to redirect targets
        if env.netrc:
            curl.setopt(pycurl.NETRC, pycurl.NETRC_OPTIONAL)
            curl.setopt(pycurl.NETRC_FILE, env.netrc)

    def _set_driving(self, curl: pycurl.Curl, options: Options) -> None:
        """Who asks the deadlines, what is shared across the run (share.py), which HTTP."""
        if not self._driven:  # perform() asks overdue() between reads, at least once a second
            curl.setopt(pycurl.NOPROGRESS, 0)
            curl.setopt(pycurl.XFERINFOFUNCTION, self._on_progress)
        curl.setopt(pycurl.HTTP_VERSION, _HTTP_VERSIONS[options.transport.http_version])
        curl.setopt(pycurl.SHARE, curl_share.acquire(options))
        if not self._driven:
            # A thread's handle keeps its idle connections in its own cache (share.py: not shared
            # between threads), which libcurl trims to MAXCONNECTS (5 by default): room for more
            # hosts than that (when the cache was shared, 280 connections for 400 URLs on 8 threads
            # were measured with the default; tests/test_connections.py).
            curl.setopt(pycurl.MAXCONNECTS, max(5, 4 * options.transport.pool))  # a multi handle keeps 4 per handle
        curl.setopt(pycurl.DNS_CACHE_TIMEOUT, curl_share.DNS_CACHE_S)

    def fetch(self, request: Request, receiver: Receiver) -> Head:
        self.start(request, receiver)
        try:
            self.curl.perform()
        except pycurl.error as exc:
            return self.finish(exc.args[0], exc.args[1])
        return self.finish(0, "")

    def start(self, request: Request, receiver: Receiver) -> None:
        """Set the handle up for ``request``; then perform it, or add it to a multi handle (backends/multi.py)."""
        self._prepare(self.curl, request)
        self._request, self._receiver, self._head, self._error = request, receiver, None, None
        self._last_data, self._seen = time.monotonic(), 0
        self._lines.clear()

    def finish(self, code: int, message: str) -> Head:
        """The transfer ended with libcurl's ``code`` (0: done): its Head, or the failure raised."""
        receiver, self._receiver = self._receiver, None
        if self._head is not None:  # also for a body refused or cut: the record keeps where it came from
            self._head.url = self.curl.getinfo(pycurl.EFFECTIVE_URL)
        if self._error is not None:
            raise self._error
        if code:
            raise self._failure(code, message, self._request)
        if self._head is None:  # an empty body: no write callback came
            self._head = self._make_head()
            receiver.on_head(self._head)  # type: ignore[union-attr]
            self._head.url = self.curl.getinfo(pycurl.EFFECTIVE_URL)
        return self._head

    def _prepare(self, curl: pycurl.Curl, request: Request) -> None:
        authorization = "authorization" in self._base_headers or any(
            name.lower() == "authorization" for name in request.headers)
        curl.setopt(pycurl.URL, credentials_rule(request.url, authorization))
        # As curl --parallel: wait for a connection being made to the host when it may multiplex
        # (HTTP/2), rather than open one per transfer. Only over TLS, where ALPN says so at the
        # handshake: on plain http the answer is the first response, and a silent one would hold
        # every later transfer to the host until its connect timeout.
        pipewait = self._may_multiplex and request.url[:6].lower() == "https:"
        if pipewait != self._pipewait:
            curl.setopt(pycurl.PIPEWAIT, int(pipewait))
            self._pipewait = pipewait
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(request.connect_timeout * 1000)))
        headers, encoding = self._header_list(request.headers)
        if (headers, encoding) != self._sent:
            curl.setopt(pycurl.HTTPHEADER, headers or [])
            curl.setopt(pycurl.ACCEPT_ENCODING, encoding)
            self._sent = (headers, encoding)
        if self._environment.proxies:
            curl.setopt(pycurl.PROXY, self._environment.proxy_for(request.url) or "")
        if request.addresses:  # the run's resolver answered (run/dns.py): libcurl's cache takes it as it is
            parts = urlsplit(request.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            entry = curl_entry(parts.hostname or "", port, request.addresses)
            if entry != self._resolved:
                curl.setopt(pycurl.RESOLVE, [entry])
                self._resolved = entry

    def _header_list(self, extra: dict[str, str]) -> tuple[list[str] | None, str]:
        """The request's headers over the run's, merged by name as requests merges them."""
        if not extra:
            return (list(self._base_headers.values()) or None), ACCEPT_ENCODING
        merged = dict(self._base_headers)
        encoding = ACCEPT_ENCODING
        for name, value in extra.items():
            if name.lower() == "accept-encoding":
                encoding = value  # ACCEPT_ENCODING sends it, and decodes what comes back
            else:
                merged[name.lower()] = f"{name}: {value}"
        return list(merged.values()) or None, encoding

    def _on_prereq(self, primary_ip: str, local_ip: str, primary_port: int, local_port: int) -> int:
        self._socket = quickack.socket_for(local_port)
        return int(pycurl.PREREQFUNC_OK)

    def _on_header(self, line: bytes) -> None:
        self._lines.append(line)
        if line[:5] == b"HTTP/" and self._socket is not None:
            quickack.quick_ack(self._socket)

    def _on_write(self, chunk: bytes) -> int | None:
        try:
            if self._head is None:
                self._head = self._make_head()
                self._receiver.on_head(self._head)  # type: ignore[union-attr]
            self._receiver.write(chunk)  # type: ignore[union-attr]
        except BaseException as exc:  # noqa: BLE001 - re-raised by fetch(); pycurl would only print it
            self._error = exc
            return 0  # fewer bytes than given: libcurl aborts with CURLE_WRITE_ERROR
        return None

    def overdue(self, now: float) -> FetchFailure | None:
        """The deadline the transfer in flight has passed, or None (outside libcurl's calls only)."""
        return self._overdue(now, len(self._lines) + int(self.curl.getinfo(pycurl.SIZE_DOWNLOAD_T)))

    def abort(self, failure: FetchFailure) -> None:
        """End the transfer with ``failure``: ``finish`` raises it (the driver removes the handle)."""
        self._error = failure

    def _overdue(self, now: float, progress: int) -> FetchFailure | None:
        """``--max-time``, ``--min-speed``, then silence: ``progress`` (header lines + body bytes) unchanged
        for the read timeout. Connecting counts as silence (libcurl's connect timeout also holds)."""
        if progress != self._seen:
            self._seen, self._last_data = progress, now
        guard = self._request.guard
        try:
            guard.check(now)
        except FetchFailure as failure:
            return failure
        if now - self._last_data >= guard.read_timeout:
            return guard.timed_out()
        return None

    def _on_progress(self, dltotal: int, dlnow: int, ultotal: int, ulnow: int) -> int:
        """The guard, asked between libcurl's reads: a non-zero return aborts (CURLE_ABORTED_BY_CALLBACK)."""
        try:
            failure = self._overdue(time.monotonic(), len(self._lines) + dlnow)
        except BaseException as exc:  # noqa: BLE001 - re-raised by fetch(); pycurl would only print it
            self._error = exc
            return 1
        if failure is None:
            return 0
        self._error = failure
        return 1

    def _make_head(self) -> Head:
        """Status and headers of the last response (earlier ones were redirects), parsed from its lines.

        pycurl refuses getinfo() while perform() runs, so the status comes from the
        status line; the final URL is filled in by fetch() once the transfer is over.
        """
        lines = self._lines
        start = len(lines) - 1
        while start >= 0 and not lines[start].startswith(b"HTTP/"):
            start -= 1
        if start < 0:
            raise FetchFailure(ErrorKind.CONNECT, "no HTTP status line in the response", retryable=True)
        status_line, *fields = b"".join(lines[start:]).decode("latin-1").split("\n")  # strip() drops each CR
        # A plain dict while parsing: Headers' case-folding get/contains are Python calls, per field.
        fields_by_name: dict[str, str] = {}
        for field in fields:
            name, sep, value = field.partition(":")
            if sep:
                key, value = name.strip().lower(), value.strip()
                earlier = fields_by_name.get(key)
                fields_by_name[key] = value if earlier is None else f"{earlier}, {value}"
        headers = Headers(fields_by_name)
        status_parts = status_line.split(None, 2)
        reason = status_parts[2].strip() if len(status_parts) > 2 else ""
        return Head(int(status_parts[1]), reason, headers, "")

    def _failure(self, code: int, message: str, request: Request) -> FetchFailure:
        """A libcurl error as the FetchFailure requests would have given for the same event."""
        if code == pycurl.E_OPERATION_TIMEDOUT:
            return self._timeout(request)
        if code == pycurl.E_TOO_MANY_REDIRECTS:
            return FetchFailure(ErrorKind.REDIRECT, loop_message(self._redirect_chain(request.url))
                                or f"Exceeded {self.curl.getinfo(pycurl.REDIRECT_COUNT)} redirects.")
        if code == pycurl.E_UNSUPPORTED_PROTOCOL and "Protocol" in message:  # a redirect's target (ours is http)
            return refused_redirect(message)
        if code in (pycurl.E_UNSUPPORTED_PROTOCOL, _WEIRD_SERVER_REPLY):  # HTTP/0.9, a bad status line
            return malformed_response(message)
        if code == pycurl.E_URL_MALFORMAT:
            return FetchFailure(ErrorKind.INVALID_URL, message)
        if code in _TLS_ERRORS:
            return FetchFailure(ErrorKind.CONNECT, f"TLS error: {message}")
        if code == pycurl.E_BAD_CONTENT_ENCODING:
            return FetchFailure(ErrorKind.BAD_CONTENT, f"cannot decode body: {message}")
        if code == pycurl.E_PARTIAL_FILE or (code in _CONNECT_ERRORS and self._head is not None):
            return FetchFailure(ErrorKind.TRUNCATED, f"body ended early: {message}", retryable=True)
        return FetchFailure(ErrorKind.CONNECT, message, retryable=True)

    def _timeout(self, request: Request) -> FetchFailure:
        """libcurl's own timeouts are TIMEOUT_MS (--max-time) and CONNECTTIMEOUT_MS (connect and TLS)."""
        failure = request.guard.timed_out()
        if "max-time" in failure.message:
            return failure
        return FetchFailure(ErrorKind.TIMEOUT, f"no connection within {request.connect_timeout:g} s",
                            retryable=True)

    def _redirect_chain(self, url: str) -> list[str]:
        chain = [url]
        for line in self._lines:
            name, sep, value = line.decode("latin-1").partition(":")
            if sep and name.strip().lower() == "location":
                chain.append(urljoin(chain[-1], value.strip()))
        return chain

    def close(self) -> None:
        self.curl.close()
        curl_share.release(self._options)


def curl_entry(host: str, port: int, addresses: tuple[str, ...]) -> str:
    """One ``CURLOPT_RESOLVE`` entry: ``host:port:addr,[v6addr]`` (see transports/resolve.py)."""
    return f"{host}:{port}:" + ",".join(f"[{a}]" if ":" in a else a for a in addresses)


def _certifi_bundle() -> str:
    """The CA bundle requests uses, so both transports trust the same roots."""
    import certifi

    return certifi.where()
