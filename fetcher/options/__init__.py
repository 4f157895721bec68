"""Run options: a frozen root of frozen parts, each option declared once (table.py).

``Options.create(**keywords)`` is the one check of the Python API's keywords and
the CLI's parsed flags: it reads each value as its table entry says, validates
it, and returns the root. It touches nothing outside the value: what depends on
the machine (``auto``, whether pycurl or Pillow is installed) and what a run
remembers process-wide (secret header values, for redaction) happen in
``prepare_run``, an explicit step of starting a run.

Code reads ``options.politeness.per_host``; a part is changed with
``dataclasses.replace``, or several options at once with ``options.replace(pool=4, ...)``.
"""

from __future__ import annotations

import importlib.util
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from typing import Any

from fetcher.errors import ConfigError
from fetcher.options import dataset
from fetcher.options.parts import (DatasetOptions, OutputOptions, PolitenessOptions, RuleOptions, SourceOptions,
                                   TransportOptions)
from fetcher.options.checks import CLIENTS, MAX_PROCESSES
from fetcher.options.table import BY_DEST, KEYWORDS, TABLE
from fetcher.options.values import parse_header, parse_size, parse_timeout

__all__ = ["CLIENTS", "CURL_INSTALL_HINT", "MAX_PROCESSES", "MEMORY_CAP", "Options", "parse_header", "parse_size",
           "parse_timeout", "prepare_run", "remember_secrets"]

MEMORY_CAP = 100 * 1024 * 1024  # in-memory bodies, unless max_size says otherwise
DEFAULT_USER_AGENT = "fetcher/{version}"
CURL_INSTALL_HINT = "pip install pycurl (or: pip install 'fetcher-dl[curl]')"


@dataclass(frozen=True, slots=True)
class Options:
    """Everything that shapes a run, in parts; build one with ``Options.create(**keywords)``.

    The worker side (``fetch_one``) reads the rules, politeness and transport parts;
    the coordinating side reads the rest.
    """

    transport: TransportOptions = field(default_factory=TransportOptions)
    rules: RuleOptions = field(default_factory=RuleOptions)
    politeness: PolitenessOptions = field(default_factory=PolitenessOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    source: SourceOptions = field(default_factory=SourceOptions)
    dataset: DatasetOptions = field(default_factory=DatasetOptions)
    # Run state, not an option (no keyword, no flag, never sent): set by run/engine.py on the options it
    # hands its backend when the engine's Flusher renames and flushes their files (download/durability.py).
    engine_flushes: bool = False
    # Run state too: set by run/runner.py's plan when this process writes the webdataset shards
    # (run/shards.py), so a re-encoded sample comes back in its Result. Never sent: a ``fetcher work``
    # worker stages its samples for the shards it writes when serve says (run/shard_build.py).
    shards_here: bool = False

    @classmethod
    def create(cls, **keywords: Any) -> Options:
        """Read, validate and normalise options given by keyword; raise ConfigError naming the bad one."""
        unknown = sorted(set(keywords) - KEYWORDS)
        if unknown:
            raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for dest, value in keywords.items():
            spec = BY_DEST[dest]
            if spec.parse is not None:
                value = spec.parse(value)
            if spec.spread is not None:
                values.update(spec.spread(value) if value is not None else {})
            else:
                values[dest] = value
        options = cls().replace(**values)
        options.check()
        options = dataset.adjust(options)  # webdataset output stages its images under names of its own
        if not options.politeness.user_agent:
            from fetcher import __version__

            options = options.replace(user_agent=DEFAULT_USER_AGENT.format(version=__version__))
        return options.replace(out=os.path.abspath(options.output.out))

    def replace(self, **values: Any) -> Options:
        """A copy with the named options changed (no check: ``create`` checks what users give)."""
        by_part: dict[str, dict[str, Any]] = defaultdict(dict)
        for dest, value in values.items():
            by_part[BY_DEST[dest].part][dest] = value
        return _replace(self, **{part: _replace(getattr(self, part), **changes) for part, changes in by_part.items()})

    def check(self) -> None:
        """Raise ConfigError naming the first option that is bad alone, then any that clash."""
        for spec in TABLE:
            if spec.check is not None and spec.part:
                spec.check(spec.dest, getattr(getattr(self, spec.part), spec.dest))
        transport, rules = self.transport, self.rules
        if transport.processes and transport.backend not in ("process", "auto"):
            raise ConfigError(f"processes applies to the process backend only, not to {transport.backend!r}")
        if rules.max_size and rules.min_size > rules.max_size:
            raise ConfigError(f"min-size {rules.min_size} is larger than max-size {rules.max_size}")
        if transport.http_version == "2" and transport.client not in ("curl", "auto"):
            raise ConfigError("--http-version 2 needs --client curl (requests speaks HTTP/1.1 only)")
        dataset.check_together(self)

    @property
    def memory_cap(self) -> int:
        """The size cap that applies: ``max_size``, or MEMORY_CAP for in-memory bodies without one."""
        return self.rules.max_size or (MEMORY_CAP if self.output.in_memory else 0)

    def worker_form(self) -> dict[str, Any]:
        """The options sent to ``fetcher work``'s workers: their fetching rules, by keyword."""
        return {spec.dest: getattr(getattr(self, spec.part), spec.dest) for spec in TABLE
                if spec.travels and spec.part}

    @classmethod
    def from_worker_form(cls, form: Mapping[str, Any], **local: Any) -> Options:
        """A worker's Options: the server's ``worker_form`` (checked again), with its own ``local`` ones.

        Keywords this version does not know, or that do not travel, are ignored.
        """
        sent = {dest: value for dest, value in form.items() if dest in BY_DEST and BY_DEST[dest].travels}
        return cls.create(**{**sent, **local})


def prepare_run(options: Options) -> tuple[Options, str]:
    """The explicit step of starting a run with ``options``; return them resolved, and what ``auto`` chose.

    Resolves ``--backend/--client auto`` (by probing the machine), checks that the
    machine has what the options need (pycurl, Pillow), and remembers the secret
    header values so every message masks them (``remember_secrets``). ``why`` is
    "" when nothing was ``auto``.

    Raises:
        ConfigError: what ``auto`` chose clashes with another option, or a module is missing.
    """
    from fetcher.auto import choose

    backend, client, why = choose(options.transport.backend, options.transport.client, options.dataset.decodes)
    if why:
        options = options.replace(backend=backend, client=client)
        options.check()  # the clashes of what auto chose (--processes with multi, say)
    if options.transport.client == "curl" and importlib.util.find_spec("pycurl") is None:
        raise ConfigError(f"--client curl needs pycurl, which is not installed: {CURL_INSTALL_HINT}")
    dataset.check_machine(options)
    if options.transport.client == "requests" and options.transport.proxy.startswith("socks") \
            and importlib.util.find_spec("socks") is None:
        raise ConfigError("a SOCKS proxy with --client requests needs PySocks: pip install PySocks "
                          "(or use --client curl)")
    remember_secrets(options)
    return options, why


def remember_secrets(options: Options) -> None:
    """Every message of this process masks the values of the run's headers (redact.py)."""
    from fetcher.redact import remember_header

    for name, value in options.politeness.headers:
        remember_header(name, value)
    from fetcher.redact import remember_proxy

    # A proxy's password (--proxy, or the environment's, which the clients read) is masked as a header's is.
    for url in [options.transport.proxy, *(v for k, v in os.environ.items() if k[-6:].lower() == "_proxy")]:
        if "@" in url:
            remember_proxy(url)
