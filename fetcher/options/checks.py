"""The checks of single option values, as the table (table.py) names them: each raises ConfigError
naming the option, in the words the CLI and the API have always used."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fetcher.errors import ConfigError

MAX_POOL = 10_000
MAX_PROCESSES = 256  # worker processes of the process backend; the pool itself may be far larger
INPUT_FORMATS = ("auto", "txt", "csv", "tsv", "jsonl", "parquet")
ON_EXISTS = ("skip", "overwrite", "rename")
DURABILITY = ("batch", "full", "none")  # durability.LEVELS, without importing it here
CLIENTS = ("requests", "curl")  # --client: the HTTP transports (transports/)
HTTP_VERSIONS = ("", "1.1", "2")

Check = Callable[[str, Any], None]


def dashed(name: str) -> str:
    return name.replace("_", "-")


def at_least_zero(name: str, value: Any) -> None:
    if value < 0:
        raise ConfigError(f"{dashed(name)} must be 0 or more, not {value!r}")


def one_of(choices: tuple[str, ...], label: str) -> Check:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{label} must be one of {', '.join(choices)}, not {value!r}")
    return check


def pool(name: str, value: Any) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"pool must be a whole number of at least 1, not {value!r}")
    if value > MAX_POOL:
        raise ConfigError(f"pool of {value} is more than the {MAX_POOL} this machine can hold")


def processes(name: str, value: Any) -> None:
    if not isinstance(value, int) or value < 0:
        raise ConfigError(f"processes must be a whole number, 0 for one per CPU, not {value!r}")
    if value > MAX_PROCESSES:
        raise ConfigError(f"processes of {value} is more than the {MAX_PROCESSES} worker processes "
                          f"fetcher starts (each costs ~25 MiB; a larger --pool needs no more of them)")


def plain_non_negative(name: str, value: Any) -> None:
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, not {value!r}")


def timeout(name: str, value: Any) -> None:
    if value <= 0:
        raise ConfigError("timeouts must be greater than 0 seconds")


def backoff(name: str, value: Any) -> None:
    if value < 0:
        raise ConfigError("backoff must be 0 seconds or more")


def min_speed_time(name: str, value: Any) -> None:
    if value <= 0:
        raise ConfigError("min-speed-time must be greater than 0 seconds")


def chunk_size(name: str, value: Any) -> None:
    if value < 1:
        raise ConfigError("chunk_size must be at least 1 byte")


def cookies(name: str, value: Any) -> None:
    if value is not None and not os.path.isfile(value):
        raise ConfigError(f"cookies file {value!r} does not exist")


def client(name: str, value: Any) -> None:
    if value not in CLIENTS + ("auto",):
        raise ConfigError(f"client must be one of {', '.join(CLIENTS)}, not {value!r}")


def http_version(name: str, value: Any) -> None:
    if value not in HTTP_VERSIONS:
        raise ConfigError(f"--http-version must be 1.1 or 2, not {value!r}")


def naming(name: str, value: Any) -> None:
    # naming.py is pure (it imports only errors and filenames), so this import stays cheap.
    from fetcher.files.naming import parse_naming

    parse_naming(value)


def encode_quality(name: str, value: Any) -> None:
    if not 1 <= value <= 100:
        raise ConfigError(f"encode-quality must be 1 to 100, not {value!r}")


def shard_size(name: str, value: Any) -> None:
    if value < 1:
        raise ConfigError(f"shard-size must be at least 1, not {value!r}")


def aspect_ratio(name: str, value: Any) -> None:
    at_least_zero(name, value)
    if value and value < 1:
        raise ConfigError(f"max-aspect-ratio is longer side / shorter side: at least 1, not {value!r}")


def resize_mode(name: str, value: Any) -> None:
    from fetcher.options.dataset import RESIZE_MODES

    one_of(RESIZE_MODES, "resize-mode")(name, value)


def encode_format(name: str, value: Any) -> None:
    from fetcher.options.dataset import ENCODE_FORMATS

    if value:
        one_of(tuple(ENCODE_FORMATS), "encode-format")(name, value)


def output_format(name: str, value: Any) -> None:
    from fetcher.options.dataset import OUTPUT_FORMATS

    one_of(OUTPUT_FORMATS, "output-format")(name, value)


def manifest_format(name: str, value: Any) -> None:
    from fetcher.options.dataset import MANIFEST_FORMATS

    one_of(MANIFEST_FORMATS, "manifest-format")(name, value)
