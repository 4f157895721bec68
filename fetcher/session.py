"""What each worker fetches through: one place, so every backend agrees.

``make_session`` returns the transport that ``options.client`` names (see
transports/), ready for ``fetch_one``; backends only create and close it.
"""

from __future__ import annotations

import http.cookiejar
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from fetcher.errors import ConfigError
from fetcher.transports import CURL_INSTALL_HINT

if TYPE_CHECKING:
    import requests
    from requests.adapters import HTTPAdapter
    from requests.models import PreparedRequest

    from fetcher.options import Options
    from fetcher.transports.base import Transport
    from fetcher.transports.curl import CurlTransport
    from fetcher.transports.environment import Environment


def make_session(options: Options, pool_maxsize: int = 1, environment: Environment | None = None) -> Transport:
    """A transport for one worker (or, for gevent, one shared by the whole pool).

    Args:
        options: the run's options (client, user agent, headers, cookies, ...).
        pool_maxsize: connections kept per host (requests); a session shared by
            N workers needs N, or urllib3 discards (and later re-opens) the extras.
        environment: proxies, CA bundle and netrc already read (the multi backend
            makes a thousand transports at once); None reads them now.

    Raises:
        ConfigError: ``--client curl`` without pycurl, or in a gevent-patched
            process (libcurl would block the event loop), or an unreadable cookies file.
    """
    from fetcher.transports.environment import Environment

    environment = environment or Environment.read()  # once per worker, not once per request
    if options.client == "curl":
        return _curl_transport(options, environment)
    from fetcher.transports.requests_transport import RequestsTransport

    return RequestsTransport(requests_session(options, pool_maxsize, environment.ca_bundle), environment)


def requests_session(options: Options, pool_maxsize: int = 1, ca_bundle: str | None = None) -> requests.Session:
    """A Session with fetcher's headers and a connection pool of ``pool_maxsize`` per host.

    ``trust_env`` is off: proxies and netrc come from environment.py, read once.
    """
    import requests

    session = requests.Session()
    session.trust_env = False
    session.headers["User-Agent"] = options.user_agent
    session.headers.update(dict(options.headers))
    session.max_redirects = options.max_redirects
    if options.insecure:
        # The CLI warns once, loudly; urllib3's per-request warning would flood.
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        session.verify = False
    elif ca_bundle:
        session.verify = ca_bundle
    if options.cookies:
        session.cookies = _load_cookies(options.cookies)  # type: ignore[assignment]
    adapter = _adapter_class()(pool_connections=16, pool_maxsize=max(pool_maxsize, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@lru_cache(maxsize=1)
def _adapter_class() -> type[HTTPAdapter]:
    """HTTPAdapter that remembers which connection pool serves which origin (defined on first use:
    importing requests is left to the first session, after gevent's monkey-patching)."""
    from requests.adapters import HTTPAdapter

    class PoolCachingAdapter(HTTPAdapter):
        """Finds a request's connection pool once per origin and TLS settings, not once per request.

        requests works the pool out from scratch on every send: it parses the URL twice,
        builds the pool key (a tuple of some twenty fields) and asks the PoolManager: about
        30 µs of the ~500 µs of CPU a small download costs (issue 8). At most
        ``pool_connections`` pools are remembered, as many as the PoolManager keeps, the
        oldest dropped first, so no more idle connections stay open than before. A pool
        closed since (urllib3 1.x closes the ones its PoolManager drops) is looked up
        again. Sending, retries, redirects and cookies are untouched, and so is
        ``HTTPAdapter.send`` (what ``responses`` mocks).
        """

        def __init__(self, pool_connections: int, **kwargs: Any) -> None:
            super().__init__(pool_connections=pool_connections, **kwargs)
            self._pools: dict[tuple[Any, ...], Any] = {}
            self._keep = max(1, pool_connections)

        # Any for the settings: requests' own annotations of them change between releases.
        def get_connection_with_tls_context(self, request: PreparedRequest, verify: Any,
                                            proxies: Any = None, cert: Any = None) -> Any:
            url = request.url or ""
            origin_end = url.find("/", url.find("//") + 2)
            key = (url if origin_end < 0 else url[:origin_end], _hashable(verify), _hashable(cert),
                   tuple(sorted(proxies.items())) if proxies else None)
            pool = self._pools.get(key)
            if pool is None or pool.pool is None:  # new, or closed since
                pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
                self._pools.pop(key, None)
                if len(self._pools) >= self._keep:  # the oldest out (list(): one atomic copy)
                    for stale in list(self._pools)[:len(self._pools) - self._keep + 1]:
                        self._pools.pop(stale, None)
                self._pools[key] = pool
            return pool

        def close(self) -> None:
            self._pools.clear()
            super().close()

    return PoolCachingAdapter


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _curl_transport(options: Options, environment: Environment) -> Transport:
    refuse_blocking_curl()
    return curl_transport(options, environment)


def refuse_blocking_curl() -> None:
    """Raise ConfigError in a gevent-patched process: libcurl driven there by anything but the hub blocks it."""
    import sys

    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("socket"):
        raise ConfigError("a blocking libcurl transfer cannot run in a gevent-patched process: it would "
                          "block the event loop; use --backend gevent (its libcurl runs on the loop), "
                          "or --client requests")


def curl_transport(options: Options, environment: Environment, driven: bool = False) -> CurlTransport:
    """A libcurl easy handle, for a driver that never lets it block (a multi handle: ``driven``), or for ``perform``.

    Raises:
        ConfigError: no pycurl, or an unreadable cookies file.
    """
    try:
        from fetcher.transports.curl import CurlTransport
    except ImportError as exc:
        raise ConfigError(f"--client curl needs pycurl, which is not installed ({exc}): "
                          f"{CURL_INSTALL_HINT}") from None
    if options.cookies:
        _load_cookies(options.cookies)  # the same check, and the same error, as for requests
    return CurlTransport(options, environment, driven)


def _load_cookies(path: str) -> http.cookiejar.MozillaCookieJar:
    """A Netscape/Mozilla ``cookies.txt`` (what browsers' export extensions and curl write)."""
    jar = http.cookiejar.MozillaCookieJar(path)
    try:
        jar.load(ignore_discard=True, ignore_expires=True)
    except (OSError, http.cookiejar.LoadError) as exc:
        raise ConfigError(f"cannot read cookies file {path!r}: {exc}") from None
    for cookie in jar:
        if cookie.expires == 0:  # curl and browser exports write 0 for a session cookie
            cookie.expires, cookie.discard = None, True
    return jar
