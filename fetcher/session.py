"""How fetcher builds a ``requests.Session``: one place, so every backend agrees."""

from __future__ import annotations

import http.cookiejar
from typing import TYPE_CHECKING

from fetcher.errors import ConfigError

if TYPE_CHECKING:
    import requests

    from fetcher.options import Options

def make_session(options: Options, pool_maxsize: int = 1) -> requests.Session:
    """A Session with fetcher's headers and a connection pool of ``pool_maxsize`` per host.

    Args:
        options: the run's options (user agent, ...).
        pool_maxsize: connections kept per host; a session shared by N workers
            needs N, or urllib3 discards (and later re-opens) the extras.
    """
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.headers["User-Agent"] = options.user_agent
    session.headers.update(dict(options.headers))
    session.max_redirects = options.max_redirects
    if options.insecure:
        # The CLI warns once, loudly; urllib3's per-request warning would flood.
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        session.verify = False
    if options.cookies:
        session.cookies = _load_cookies(options.cookies)  # type: ignore[assignment]
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(pool_maxsize, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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
