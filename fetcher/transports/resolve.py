"""Connecting to the addresses the run's resolver found, instead of asking DNS again per process.

The coordinating process resolves each host once for the whole run (run/dns.py) and hands
the addresses along with each task (``FetchTask.addresses`` -> ``Request.addresses``), so a
worker process, thread or ``fetcher work`` host never looks the name up itself:

- libcurl takes them as ``CURLOPT_RESOLVE`` entries (``HOST:PORT:ADDR[,ADDR]``), which fill
  its DNS cache (the run's share handle, share.py) for that host and port;
- requests has no public way to be given an address: its connections come from urllib3,
  which resolves ``_dns_host`` in ``HTTPConnection._new_conn``. ``Resolving`` (taken in by
  head_deadline.py's connection classes) overrides that one private method, to connect to the known address while ``host`` (the
  Host header, TLS's SNI and certificate check) stays the name. Measured reason, written
  here as the house rule asks: without it every requests worker process (and every
  ``fetcher work`` host) asked DNS again for each host, once per connection it opened when
  no caching resolver runs on the machine (tests/test_network_dns.py counts the queries at a
  resolver of the test's own: one per host per run with it, one per process without).

Redirects to hosts the resolver never saw, and proxies (which resolve names themselves),
go the usual way.
"""

from __future__ import annotations

import socket
from typing import Any

from urllib3.exceptions import ConnectTimeoutError

MAX_ANSWERS = 65_536  # hosts remembered per process; the oldest goes first (its tasks bring it back)
_answers: dict[str, tuple[str, ...]] = {}  # host name (lower case) -> addresses, for this process


def remember(host: str, addresses: tuple[str, ...]) -> None:
    """Connections to ``host`` from this process go to ``addresses`` (first that answers)."""
    host = host.lower()
    if _answers.get(host) == addresses:
        return
    _answers[host] = addresses
    if len(_answers) > MAX_ANSWERS:
        _answers.pop(next(iter(_answers)), None)


class Resolving:
    """A mixin for urllib3 connection classes: connect to a remembered address of the host, if there is one.

    head_deadline.py's connection classes take it in, so every connection of fetcher's
    requests sessions does.
    """

    _dns_host: str

    def _new_conn(self) -> socket.socket:
        base: Any = super()
        addresses = _answers.get(self._dns_host.rstrip(".").lower())
        if not addresses:
            return base._new_conn()  # type: ignore[no-any-return]
        name = self._dns_host
        error: Exception | None = None
        try:
            for address in addresses:  # as create_connection tries each address getaddrinfo gives
                self._dns_host = address
                try:
                    return base._new_conn()  # type: ignore[no-any-return]
                except (OSError, ConnectTimeoutError) as exc:  # NewConnectionError is a ConnectTimeoutError
                    error = exc
        finally:
            self._dns_host = name  # host, SNI and the certificate check keep the name
        assert error is not None
        raise error
