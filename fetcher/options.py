"""Run options: one frozen object, validated once, shared by the CLI and the API."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from fetcher.errors import ConfigError

DEFAULT_USER_AGENT = "fetcher/{version} (+https://pypi.org/project/fetcher/)"
INPUT_FORMATS = ("auto", "txt", "csv", "tsv", "jsonl")
ON_EXISTS = ("skip", "overwrite", "rename")


@dataclass(frozen=True, slots=True)
class Options:
    """Everything that shapes a run.

    The worker side (``fetch_one``) reads only the fetch fields; the coordinating
    side reads the rest. Build one with ``Options.create(**kwargs)`` so values are
    checked and normalised in one place.
    """

    out: str = "downloads"
    manifest: str | None = None
    backend: str = "thread"
    pool: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    backoff_cap: float = 30.0
    chunk_size: int = 64 * 1024
    user_agent: str = ""
    in_flight: int = 0  # 0 means "a few times the pool"
    input_format: str = "auto"  # auto: from the file's extension; stdin is txt
    naming: str = "url"  # url | hash | content-disposition | a template (naming.parse_naming)
    on_exists: str = "skip"  # skip | overwrite | rename (placement.py)

    @classmethod
    def create(cls, **kwargs: Any) -> Options:
        """Validate and normalise options; raise ConfigError naming the bad one."""
        timeout = kwargs.pop("timeout", None)
        if timeout is not None:
            kwargs["connect_timeout"], kwargs["read_timeout"] = parse_timeout(timeout)
        options = replace(cls(), **kwargs)
        options._check()
        if not options.user_agent:
            from fetcher import __version__

            options = replace(options, user_agent=DEFAULT_USER_AGENT.format(version=__version__))
        return replace(options, out=os.path.abspath(options.out))

    def _check(self) -> None:
        if not isinstance(self.pool, int) or self.pool < 1:
            raise ConfigError(f"pool must be a whole number of at least 1, not {self.pool!r}")
        if self.pool > 10_000:
            raise ConfigError(f"pool of {self.pool} is more than the 10000 this machine can hold")
        if self.retries < 0:
            raise ConfigError(f"retries must be 0 or more, not {self.retries!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("timeouts must be greater than 0 seconds")
        if self.backoff < 0 or self.backoff_cap < 0:
            raise ConfigError("backoff must be 0 seconds or more")
        if self.in_flight < 0:
            raise ConfigError(f"in_flight must be 0 or more, not {self.in_flight!r}")
        self._check_inputs_and_naming()

    def _check_inputs_and_naming(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"input format must be one of {', '.join(INPUT_FORMATS)}, "
                              f"not {self.input_format!r}")
        if self.on_exists not in ON_EXISTS:
            raise ConfigError(f"on-exists must be one of {', '.join(ON_EXISTS)}, not {self.on_exists!r}")
        # naming.py is pure (it imports only errors and filenames), so this import stays cheap.
        from fetcher.naming import parse_naming

        parse_naming(self.naming)

    @property
    def window(self) -> int:
        """How many tasks may be submitted and unfinished at once (backpressure)."""
        return self.in_flight or max(2 * self.pool, self.pool + 4)

    @property
    def manifest_path(self) -> str:
        return os.path.abspath(self.manifest) if self.manifest else os.path.join(self.out, "manifest.jsonl")


def parse_timeout(value: float | str | tuple[float, float]) -> tuple[float, float]:
    """Read ``10``, ``"10"`` or ``"5,30"`` (connect, read) as a (connect, read) pair."""
    if isinstance(value, tuple):
        parts = [str(v) for v in value]
    else:
        parts = str(value).split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"timeout must be seconds, or CONNECT,READ seconds; got {value!r}") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or min(numbers) <= 0:
        raise ConfigError(f"timeout must be one or two positive numbers of seconds; got {value!r}")
    return numbers[0], numbers[1]
