"""The network options' values (docs/network.md): ``--proxy`` URLs and ``--dns-servers`` lists.

Pure parsing, as values.py: an error never shows a proxy URL, which may hold a password.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fetcher.errors import ConfigError

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
_PROXY_PORTS = {"https": 443}  # else 1080, as curl -x assumes for a proxy without a port


def parse_proxy(value: Any) -> str:
    """A ``--proxy`` URL checked and given its port: ``SCHEME://[USER:PASSWORD@]HOST[:PORT]``; "" for none.

    The port is written out (curl's default: 1080, or 443 for ``https://``), so both clients
    connect to the same place.
    """
    text = str(value or "").strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError("--proxy must look like SCHEME://[USER:PASSWORD@]HOST[:PORT] with a port of "
                          "1 to 65535") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES or "://" not in text:
        raise ConfigError(f"--proxy must start with one of {', '.join(s + '://' for s in PROXY_SCHEMES)}; "
                          f"got {(scheme + '://') if scheme else 'no scheme'}")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("--proxy must look like SCHEME://[USER:PASSWORD@]HOST[:PORT], nothing after the port")
    userinfo, at, host = parts.netloc.rpartition("@")
    if port is None:
        host = f"{host}:{_PROXY_PORTS.get(scheme, 1080)}"
    return f"{scheme}://{userinfo}{at}{host}"


def read_proxy(value: Any) -> Any:
    """``--proxy @FILE``: the one URL in FILE (``#`` lines skipped), so a password stays off argv."""
    if not isinstance(value, str) or not value.startswith("@"):
        return value
    try:
        with open(value[1:], encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the proxy from {value[1:]!r}: {getattr(exc, 'strerror', None) or exc}"
                          ) from None
    if len(lines) != 1:
        raise ConfigError(f"{value[1:]} must hold one proxy URL on one line, not {len(lines)} lines")
    return lines[0]


def parse_servers(value: Any) -> tuple[str, ...]:
    """``--dns-servers 192.0.2.53,[2001:db8::53]:5353`` -> a tuple of ``IP[:PORT]`` texts."""
    if isinstance(value, (tuple, list)):
        return tuple(str(v) for v in value)
    return tuple(part.strip() for part in str(value or "").split(",") if part.strip())
