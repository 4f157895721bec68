"""Exceptions fetcher raises for misuse; per-URL failures are Results, never these.

    FetcherError
     ├── ConfigError (also ValueError)     bad option, bad input file: CLI exit 2
     │    └── BackendError                 unknown backend, or one that cannot run here
     └── Interrupted                       the run was cancelled (Ctrl-C): CLI exit 130

Only positional arguments reach ``Exception.__init__`` so every class pickles.
"""

from __future__ import annotations


class FetcherError(Exception):
    """Base class of every exception fetcher raises on purpose."""


class ConfigError(FetcherError, ValueError):
    """An option, a flag or an input file is unusable; the message says which and why."""


class BackendError(ConfigError):
    """The chosen backend does not exist or cannot run in this process."""


class Interrupted(FetcherError):
    """The run was cancelled before every URL reached a final state."""
