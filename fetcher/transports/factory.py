"""What each worker fetches through: one place, so every backend agrees.

``make_session`` returns the transport that ``options.transport.client`` names (see
transports/), ready for ``fetch_one``; backends only create and close it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fetcher.errors import ConfigError
from fetcher.transports import CURL_INSTALL_HINT

if TYPE_CHECKING:
    import http.cookiejar

    import requests

    from fetcher.options import Options
    from fetcher.transports.base import Transport
    from fetcher.transports.curl.easy import CurlTransport
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

    environment = environment or Environment.read(options.transport.proxy)  # once per worker, not once per request
    if options.transport.client == "curl":
        return _curl_transport(options, environment)
    from fetcher.transports.requests import RequestsTransport

    return RequestsTransport(requests_session(options, pool_maxsize, environment.ca_bundle), environment)


def requests_session(options: Options, pool_maxsize: int = 1, ca_bundle: str | None = None) -> requests.Session:
    """A Session with fetcher's headers and a connection pool of ``pool_maxsize`` per host.

    ``trust_env`` is off: proxies and netrc come from environment.py, read once.
    """
    import requests

    session = requests.Session()
    session.trust_env = False
    session.headers["User-Agent"] = options.politeness.user_agent
    session.headers.update(dict(options.politeness.headers))
    session.max_redirects = options.rules.max_redirects
    if options.politeness.insecure:
        # The CLI warns once, loudly; urllib3's per-request warning would flood.
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        session.verify = False
    elif ca_bundle:
        session.verify = ca_bundle
    if options.politeness.cookies:
        session.cookies = _load_cookies(options.politeness.cookies)  # type: ignore[assignment]
    from fetcher.transports.requests import ProxyTlsAdapter

    # Its connections read heads within --max-time (head_deadline.py) and connect to the run's DNS
    # answers (resolve.py); an https:// proxy's certificate is checked as the sites' are.
    adapter = ProxyTlsAdapter(ca_bundle, options.politeness.insecure, pool_connections=16,
                              pool_maxsize=max(pool_maxsize, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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
        from fetcher.transports.curl.easy import CurlTransport
    except ImportError as exc:
        raise ConfigError(f"--client curl needs pycurl, which is not installed ({exc}): "
                          f"{CURL_INSTALL_HINT}") from None
    if options.politeness.cookies:
        _load_cookies(options.politeness.cookies)  # the same check, and the same error, as for requests
    return CurlTransport(options, environment, driven)


def _load_cookies(path: str) -> http.cookiejar.MozillaCookieJar:
    """A Netscape/Mozilla ``cookies.txt`` (what browsers' export extensions and curl write)."""
    import http.cookiejar  # only with --cookies: it brings urllib.request, http.client and email (issue 29)
    import warnings

    jar = http.cookiejar.MozillaCookieJar(path)
    try:
        # cookiejar turns any parse error into LoadError, but first prints "http.cookiejar bug!" and a
        # traceback as a warning (a line that is not UTF-8, a NUL, too few fields): silenced here.
        with open(path, "rb") as handle:  # cookiejar's own decoding fails with an UnboundLocalError (3.11)
            handle.read().decode("utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jar.load(ignore_discard=True, ignore_expires=True)
    except (OSError, http.cookiejar.LoadError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read cookies file {path!r}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                          ) from None
    for cookie in jar:
        if cookie.expires == 0:  # curl and browser exports write 0 for a session cookie
            cookie.expires, cookie.discard = None, True
    return jar
