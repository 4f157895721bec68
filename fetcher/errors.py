"""Exceptions fetcher raises for misuse (per-URL failures are Results, never these), and exit statuses.

    FetcherError
     ├── ConfigError (also ValueError)     bad option, bad input file: CLI exit 2
     │    └── BackendError                 unknown backend, or one that cannot run here
     └── Interrupted                       the run was cancelled (Ctrl-C): CLI exit 130

    FetchFailure                           internal: one attempt failed (a rule, the network, the
                                           disk); fetch_one turns it into a failed Result, so it
                                           never reaches a caller

Only positional arguments reach ``Exception.__init__`` so every class pickles.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fetcher.models import ErrorKind


class FetcherError(Exception):
    """Base class of every exception fetcher raises on purpose."""


class ConfigError(FetcherError, ValueError):
    """An option, a flag or an input file is unusable; the message says which and why."""


class BackendError(ConfigError):
    """The chosen backend does not exist or cannot run in this process."""


class Interrupted(FetcherError):
    """The run was cancelled before every URL reached a final state."""


class FetchFailure(Exception):
    """One attempt failed for a reason worth a manifest error (not a bug)."""

    def __init__(self, kind: ErrorKind, message: str, retryable: bool = False,
                 http_status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(kind, message)
        self.kind, self.message, self.retryable = kind, message, retryable
        self.http_status, self.retry_after = http_status, retry_after


class ExitStatus(enum.IntEnum):
    """The exit status of ``fetcher``, ``fetcher serve`` and ``fetcher work`` (README: Exit status),
    and ``Summary.exit_code``: one definition for every command."""

    OK = 0  # every URL was saved or skipped (``work``: the run is over)
    FAILED = 1  # at least one URL failed (``work``: the server could not be reached)
    USAGE = 2  # a usage or configuration error: nothing was downloaded
    STORAGE = 3  # the output disk is full or read-only (issue 13)
    INTERRUPTED = 130  # Ctrl-C or SIGTERM: what finished is kept
