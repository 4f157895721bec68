"""How fetcher builds a ``requests.Session``: one place, so every backend agrees."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

    from fetcher.options import Options

MAX_REDIRECTS = 10


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
    session.max_redirects = MAX_REDIRECTS
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(pool_maxsize, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
