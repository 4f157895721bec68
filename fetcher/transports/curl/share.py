"""One libcurl share handle per run: DNS answers and TLS sessions.

Without it each easy handle (one per worker or pool slot) resolves every host
and does a full TLS handshake on every connection it opens itself. Measured on
the WAN benchmark (issue 19, 300 URLs over 50 hosts at 80 ms, pool 256): two
DNS queries (A and AAAA) per connection, 265 connections and as many full
handshakes, where curl --parallel made 46 connections and 92 queries.

What is shared:
- ``LOCK_DATA_DNS``: a host is resolved once per ``DNS_CACHE_S`` for the run,
  not once per handle (libcurl never sees a record's TTL; 5 minutes is a common one);
- ``LOCK_DATA_SSL_SESSION``: a second connection to a host resumes the first's session;

Not shared: connections (``LOCK_DATA_CONNECT``). libcurl does not support sharing them
between concurrent threads (CURLSHOPT_SHARE(3)), and the thread backend did: a run of
2,100 URLs with redirects, bodies over --max-size and retries on 16 threads aborted with
"double free or corruption" 30 times in 30 (load ~16), and 0 in 30 without it. Each
thread's easy handle keeps its own idle connections (tests/test_connections.py); the
handles of one multi handle share its connection cache already.

pycurl locks the share itself (a Python lock per data kind), so threads may use it.
The share lives while a transport holds it: ``acquire`` per transport, ``release``
on close; the last release closes it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pycurl

if TYPE_CHECKING:
    from fetcher.options import Options

DNS_CACHE_S = 300



class _Entry:
    def __init__(self, share: pycurl.CurlShare, options: Options) -> None:
        self.share, self.options, self.holders = share, options, 0  # options kept: its id stays unique


_lock = threading.Lock()
_shares: dict[int, _Entry] = {}  # id(options) -> its share


def acquire(options: Options) -> pycurl.CurlShare:
    """The share of the run ``options`` belongs to (one per Options object)."""
    key = id(options)
    with _lock:
        entry = _shares.get(key)
        if entry is None:
            share = pycurl.CurlShare()
            share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_DNS)
            share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_SSL_SESSION)
            entry = _shares[key] = _Entry(share, options)
        entry.holders += 1
        return entry.share


def release(options: Options) -> None:
    """One transport is done with the share; the last one closes it."""
    key = id(options)
    with _lock:
        entry = _shares.get(key)
        if entry is None:
            return
        entry.holders -= 1
        if entry.holders <= 0:
            del _shares[key]
            entry.share.close()
