"""How an option's value is read: from the command line (argparse types) and from the Python API.

Pure functions over values; each error is a ConfigError (or, for an argparse type,
an ArgumentTypeError that argparse turns into one line naming the flag).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fetcher.errors import ConfigError

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


# -- argparse types ----------------------------------------------------------------------------


def whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}" if least
                                             else f"must be 0 or more, not {value}")
        return value
    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


# -- values given as text ------------------------------------------------------------------------


def parse_timeout(value: float | str | tuple[float, float]) -> tuple[float, float]:
    """Read ``10``, ``"10"`` or ``"5,30"`` (connect, read) as a (connect, read) pair."""
    if isinstance(value, (tuple, list)):
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


def parse_size(value: int | str, what: str = "size") -> int:
    """Read ``10M``, ``1.5G``, ``512k``, ``4096`` or ``10MiB`` as bytes (powers of 1024)."""
    if isinstance(value, int):
        return value
    text = value.strip().lower().removesuffix("ib").removesuffix("b").removesuffix("/s")
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _SIZE_UNITS else (text, "")
    try:
        amount = float(number)
    except ValueError:
        raise ConfigError(f"{what.replace('_', '-')} must be a size like 500K, 10M or 1G; got {value!r}") from None
    if amount < 0:
        raise ConfigError(f"{what.replace('_', '-')} must be 0 or more; got {value!r}")
    return int(amount * _SIZE_UNITS[unit])


def parse_header(text: str) -> tuple[str, str]:
    """``"Referer: https://x/"`` -> ``("Referer", "https://x/")``."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name) or "\r" in value or "\n" in value:
        # Never the value itself: it may be a token (a missing colon leaves no name to judge by).
        shown = f"{name}: ..." if sep else f"{len(text)} characters without a colon"
        raise ConfigError(f"header must look like 'Name: value'; got {shown!r}")
    return name, value.strip()


def parse_headers(value: Any) -> Any:
    """``headers=``: ``"Name: value"`` strings or pairs, or a mapping, as a tuple of pairs."""
    if isinstance(value, Mapping):
        return tuple(value.items())
    if isinstance(value, (list, tuple)):
        return tuple(parse_header(h) if isinstance(h, str) else tuple(h) for h in value)
    return value


def parse_accept(value: Any) -> Any:
    """``accept=``: ``"image/*, application/pdf"`` or a sequence, as a tuple of lower-case types."""
    if isinstance(value, str):
        return tuple(p.strip().lower() for p in value.split(",") if p.strip())
    if isinstance(value, list):
        return tuple(value)
    return value


def sizes(what: str) -> Callable[[Any], Any]:
    """``max_size=`` and friends: a number of bytes, or text such as ``"10M"``."""
    def parse(value: Any) -> Any:
        return parse_size(value, what) if isinstance(value, str) else value
    return parse


def expand_headers(values: Iterable[str]) -> list[str | tuple[str, str]]:
    """``--header`` values, each ``@FILE`` replaced by the headers in FILE (curl's ``-H @FILE``).

    FILE has one ``Name: value`` per line; blank lines and lines starting with
    ``#`` are skipped. An error names the file and line, never the line's text.
    """
    headers: list[str | tuple[str, str]] = []
    for value in values:
        if not value.startswith("@"):  # "@" cannot start a header name (RFC 9110 token)
            headers.append(value)
            continue
        try:
            with open(value[1:], encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read headers from {value[1:]!r}: {getattr(exc, 'strerror', None) or exc}"
                              ) from None
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    headers.append(parse_header(line))
                except ConfigError:
                    raise ConfigError(f"{value[1:]} line {number}: a header must look like 'Name: value'"
                                      ) from None
    return headers
