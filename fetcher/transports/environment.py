"""What the process environment says about networking, read once per session instead of per request.

requests with ``trust_env=True`` (its default) looks up the proxy variables,
NO_PROXY and ``~/.netrc`` on every request: about a fifth of its per-request
time on small files (py-spy, issue 8). Both transports run with that off and
take these settings from here instead, resolved once when a worker's session
is made, with the same meaning as requests and curl give them:

- ``http_proxy``/``https_proxy``/``all_proxy`` (either case), and ``no_proxy``
  (host names, domain suffixes, IP addresses, ``*``);
- ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``: the CA bundle (else certifi's);
- ``NETRC``, else ``~/.netrc`` or ``~/_netrc``: credentials per host.

Changing these variables while a run is going has no effect on that run.
``--proxy URL`` (``Options.proxy``) replaces the proxy variables for every scheme;
``no_proxy`` still applies, as it does for ``curl -x``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Environment:
    """Proxies, CA bundle and netrc file, as the environment had them when read."""

    proxies: dict[str, str] = field(default_factory=dict)  # scheme ("http", "https", "all") -> proxy URL
    no_proxy: str = ""
    ca_bundle: str | None = None
    netrc: str | None = None

    @classmethod
    def read(cls, proxy: str = "") -> Environment:
        """The current process environment's settings; ``proxy`` (``--proxy``), if given, for every scheme."""
        found = _proxies_environment()
        no_proxy = found.pop("no", "")
        if proxy:
            proxies = {"all": proxy}
        else:
            proxies = {scheme: url for scheme, url in found.items() if scheme in ("http", "https", "all") and url}
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
        return cls(proxies, no_proxy, ca_bundle, _netrc_file())

    def proxy_for(self, url: str) -> str | None:
        """The proxy URL for a request to ``url``, or None to connect directly."""
        if not self.proxies:
            return None
        parts = urlsplit(url)
        proxy = self.proxies.get(parts.scheme) or self.proxies.get("all")
        if proxy is None or _bypassed(parts.hostname or "", parts.port, self.no_proxy):
            return None
        return proxy


@lru_cache(maxsize=4096)
def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """NO_PROXY matching as urllib (and so requests) does it; cached: a run meets few hosts."""
    if not no_proxy:
        return False
    import urllib.request  # only with a proxy: see _proxies_environment

    netloc = f"{host}:{port}" if port else host
    # Public in urllib.request, missing from typeshed.
    return bool(urllib.request.proxy_bypass_environment(netloc, {"no": no_proxy}))  # type: ignore[attr-defined]


def _proxies_environment() -> dict[str, str]:
    """urllib's ``getproxies_environment()`` (lower- and upper-case names, lower wins), imported
    only when some ``*_proxy`` variable is set: urllib.request (and through it http.client, ssl and
    email) was a tenth of the interpreter's start-up (issue 29)."""
    if not any(name[-6:].lower() == "_proxy" for name in os.environ):
        return {}
    import urllib.request

    return urllib.request.getproxies_environment()


def _netrc_file() -> str | None:
    """The netrc file requests and curl would read, if it exists."""
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for candidate in candidates:
        try:
            path = os.path.expanduser(candidate)
        except KeyError:  # no home directory to expand
            return None
        if os.path.isfile(path):
            return path
    return None
