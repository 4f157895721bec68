"""``--limit-rate``: one cap on a run's download bandwidth, shared by every process of the run.

Each chunk a download receives is paid for here before the next is read: a token bucket
kept as its "theoretical arrival time" (GCRA), the moment by which the run's bytes so far
would have arrived at exactly the cap. A chunk moves that moment on by ``len / rate``; the
download then sleeps until it is less than ``BURST_S`` ahead of now. While a download sleeps
its socket is not read, so TCP's window holds the server back, as ``curl --limit-rate`` does.

The moment lives in an 8-byte file in the output folder's ``.fetcher`` (the journal's folder),
read and written under ``flock``, so threads, greenlets, the process backend's children and
libcurl's loops of one run all draw on one cap; ``fetcher work`` keeps its own, in its own
folder. It is wall-clock time, so a file left by an earlier run is in the past, not in a
future a reboot would have put it in; a moment implausibly far ahead is taken as stale.
In-memory runs (no folder) share a cap per process.

Where a download's callbacks run on gevent's hub (``--backend gevent --client curl``) the
sleep cannot switch greenlets: it blocks the hub, which is the cap doing its job.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fetcher.options import Options

BURST_S = 0.1  # bytes the run may be ahead of its cap, in seconds of the cap
STALE_S = 120.0  # a moment further ahead than this (and than one chunk takes) is left from another run
FOLDER = ".fetcher"  # run/journal.JOURNAL_DIR, named here because that layer is above this one
FILE = "rate"
_PACK = struct.Struct("d")


class RateLimit:
    """The cap of one run in this process (see the module docstring).

    Args:
        rate: bytes per second.
        path: the shared file; None keeps the moment in this process only.
    """

    def __init__(self, rate: int, path: str | None) -> None:
        self.rate = rate
        self._lock = threading.Lock()  # flock does not exclude threads sharing one descriptor
        self._moment = 0.0
        self._fd: int | None = None
        if path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def take(self, size: int) -> None:
        """Pay for ``size`` bytes just received: sleep while the run is ahead of its cap."""
        now = time.time()
        with self._lock:
            ahead = self._advance(now, size / self.rate)
        if ahead > BURST_S:
            _sleep(ahead - BURST_S)

    def _advance(self, now: float, cost: float) -> float:
        """Move the shared moment on by ``cost`` seconds; return how far ahead of ``now`` it is."""
        fd = self._fd
        if fd is None:
            self._moment = _next(self._moment, now, cost)
            return self._moment - now
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            data = os.pread(fd, _PACK.size, 0)
            moment = _next(_PACK.unpack(data)[0] if len(data) == _PACK.size else 0.0, now, cost)
            os.pwrite(fd, _PACK.pack(moment), 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return moment - now

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _next(moment: float, now: float, cost: float) -> float:
    if moment < now or moment > now + STALE_S + cost:  # idle (no credit is saved up), or stale
        moment = now
    return moment + cost


def _sleep(seconds: float) -> None:
    """``time.sleep``, except on gevent's hub, where only the unpatched sleep may run."""
    gevent, monkey = sys.modules.get("gevent"), sys.modules.get("gevent.monkey")  # never imported here
    if gevent is not None and monkey is not None and gevent.getcurrent() is gevent.get_hub():
        monkey.get_original("time", "sleep")(seconds)
        return
    time.sleep(seconds)


_limits: dict[tuple[int, str | None], RateLimit] = {}
_limits_lock = threading.Lock()


def for_options(options: Options) -> RateLimit | None:
    """The cap a download of this run pays into, or None without ``--limit-rate``."""
    rate = options.transport.limit_rate
    if not rate:
        return None
    path = None if options.output.in_memory else os.path.join(options.output.out, FOLDER, FILE)
    key = (rate, path)
    limit = _limits.get(key)
    if limit is None:
        with _limits_lock:
            limit = _limits.get(key)
            if limit is None:
                try:
                    limit = RateLimit(rate, path)
                except OSError:  # the folder cannot be written: the download will say so; cap this process
                    limit = RateLimit(rate, None)
                _limits[key] = limit
    return limit
