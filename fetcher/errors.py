"""Exceptions fetcher raises for misuse (per-URL failures are Results, never these), and exit statuses.

    FetcherError
     ├── ConfigError (also ValueError)     bad option, bad input file: CLI exit 2
     │    ├── BackendError                 unknown backend, or one that cannot run here
     │    └── AuthError                    a broker refused the key or password (distributed mode)
     ├── LinkError                         a broker could not be reached, or a call timed out: retried
     ├── StorageError                      the output's disk is full or read-only: CLI exit 3
     └── Interrupted                       the run was cancelled (Ctrl-C): CLI exit 130

    FetchFailure                           internal: one attempt failed (a rule, the network, the
                                           disk); fetch_one turns it into a failed Result, so it
                                           never reaches a caller

Only positional arguments reach ``Exception.__init__`` so every class pickles.
"""

from __future__ import annotations

import enum
import errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fetcher.models import ErrorKind

# The errors of a filesystem that takes no more writes at all (not of one file): disk full,
# quota exceeded, mounted read-only.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class ExitStatus(enum.IntEnum):
    """The exit status of ``fetcher``, ``fetcher serve`` and ``fetcher work`` (README: Exit status),
    and of ``Summary.exit_code``: the one definition every command uses."""

    OK = 0  # every URL saved or skipped
    FAILED = 1  # some URL failed (see the manifest); for ``work``: no server
    USAGE = 2  # a bad flag, option or input file: nothing was fetched
    STORAGE = 3  # the output's disk filled up or is read-only: the run stopped, what finished is kept
    INTERRUPTED = 130  # Ctrl-C (or SIGTERM for serve/work)


class FetcherError(Exception):
    """Base class of every exception fetcher raises on purpose."""


class ConfigError(FetcherError, ValueError):
    """An option, a flag or an input file is unusable; the message says which and why."""


class BackendError(ConfigError):
    """The chosen backend does not exist or cannot run in this process."""


class LinkError(FetcherError):
    """The broker (serve, or Redis) could not be reached, or a call did not complete in time; try again later."""


class AuthError(ConfigError):
    """The broker rejected the authkey or password (or this side rejected the server's)."""


class StorageError(FetcherError):
    """The output folder's filesystem refused a write the run cannot do without.

    Raised when the journal or the manifest cannot be written, or a download's
    file cannot be because the disk is full, over quota or read-only
    (``STORAGE_ERRNOS``): every later URL would fail the same way, so the run
    stops. What finished is kept; the same command finishes the rest once
    there is room.
    """


class Interrupted(FetcherError):
    """The run was cancelled before every URL reached a final state."""


class FetchFailure(Exception):
    """One attempt failed for a reason worth a manifest error (not a bug)."""

    def __init__(self, kind: ErrorKind, message: str, retryable: bool = False,
                 http_status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(kind, message)
        self.kind, self.message, self.retryable = kind, message, retryable
        self.http_status, self.retry_after = http_status, retry_after
