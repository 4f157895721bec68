"""What both ends of the Redis broker share: the address, the password, the keys, one way to connect.

The keys of one run live under ``fetcher:QUEUE:`` so that several runs can
share a Redis (``--queue``):

    run        hash    protocol, version, run_id, epoch, state, the run's options (JSON), lease timing
    tasks      stream  one entry per lease; consumer group ``workers`` (its pending list = the lease book)
    results    stream  what workers finished (and gave back), read by ``serve`` only
    stats      string  JSON counters ``serve`` refreshes for ``fetcher status``
    worker:ID  string  a worker's description, with a TTL its calls renew (who is alive, and its slots)
    mail:ID    list    shard orders for a worker (webdataset runs; its reports go in the results stream)

Only what is in flight is in Redis; the journal in ``serve``'s ``-o`` is the
source of truth. redis-py is imported lazily: ``fetcher[redis]`` is optional.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fetcher.distributed.broker import RedisSpec
from fetcher.errors import ConfigError

PASSWORD_ENV = "FETCHER_REDIS_PASSWORD"
SCHEMES = ("redis", "rediss", "unix")
GROUP = "workers"
MESSAGE = "m"  # the one field of every stream entry: a JSON message (wire.py)
MAX_BLOCK_MS = 250  # a blocking read: far under the socket timeout, and an idle worker hears "over" soon


def is_redis_url(text: str) -> bool:
    return text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def redis_spec(url: str, queue: str, password_file: str | None, warn: Callable[[str], None]) -> RedisSpec:
    """A RedisSpec from the command line, with the password from ``password_file`` or $FETCHER_REDIS_PASSWORD.

    Raises:
        ConfigError: not a redis URL, a password inside it (``ps`` would show it), an unreadable file,
            a bad queue name, or redis-py missing.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(f"a Redis broker is redis://[USER@]HOST:PORT/DB, rediss://... or unix:///PATH, not {url!r}")
    if parts.password is not None:
        raise ConfigError(f"put the Redis password in ${PASSWORD_ENV} or --redis-password-file, not in the URL "
                          "(a command line is visible to every user in ps)")
    if not queue or any(c in queue for c in " :*?[]{}"):
        raise ConfigError(f"--queue must be a plain name (letters, digits, - _ .), not {queue!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"the Redis URL {url!r} has no host")
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigError("the Redis broker needs redis-py: pip install 'fetcher-dl[redis]' ('.[redis]' in a checkout)") from None
    return RedisSpec(url, queue, _password(password_file, warn))


def _password(path: str | None, warn: Callable[[str], None]) -> str | None:
    if path is None:
        return os.environ.get(PASSWORD_ENV) or None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --redis-password-file {path!r}: {getattr(exc, 'strerror', None) or exc}"
                          ) from None
    if os.stat(path).st_mode & 0o077:
        warn(f"warning: Redis password file {path!r} can be read by other users: chmod 600 {path}")
    return text or None


def display(url: str) -> str:
    """The URL as it may be printed (it never holds a password, but be sure)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{netloc}" if parts.username else netloc))


class Keys:
    """The key names of one queue."""

    def __init__(self, queue: str) -> None:
        prefix = f"fetcher:{queue}:"
        self.prefix = prefix
        self.run = prefix + "run"
        self.tasks = prefix + "tasks"
        self.results = prefix + "results"
        self.stats = prefix + "stats"
        self.worker_pattern = prefix + "worker:*"
        self.mail_pattern = prefix + "mail:*"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def mail(self, worker_id: str) -> str:
        """A worker's shard orders (a list serve pushes to, the worker empties): webdataset runs."""
        return f"{self.prefix}mail:{worker_id}"


def connect(spec: RedisSpec, timeout: float) -> Any:
    """A client whose every command has a deadline and which never retries on its own.

    Typed Any: redis-py's replies are unions of bytes, str, lists and dicts per
    command; each reply is checked where it is used (and messages by wire.py).

    The worker's ServerConnection (and serve's loop) decide when to try again,
    with backoff; redis-py's own retries would hide an outage behind minutes of waiting.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # Replies stay bytes: redis-py decoding them would raise UnicodeDecodeError from inside its parser
    # on any non-UTF-8 value anyone wrote to the run's keys. wire.text_of decodes, and a bad value is dropped.
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                               "retry": Retry(NoBackoff(), 0), "decode_responses": False}
    if not spec.url.lower().startswith("unix:"):
        options["socket_keepalive"] = True  # a vanished peer is noticed even between calls
    if spec.password is not None:
        options["password"] = spec.password
    return redis.Redis.from_url(spec.url, **options)


def entry_id(value: object) -> str:
    """A stream entry id (or XAUTOCLAIM cursor) as text: Redis makes them, always ``MS-SEQ`` in ASCII."""
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def message_of(fields: object) -> object:
    """The ``m`` field of a stream entry, as bytes (None if absent: a foreign entry)."""
    return fields.get(MESSAGE.encode()) if isinstance(fields, dict) else None


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a lost or slow Redis raises (ConnectionError, TimeoutError, a loading or read-only replica)."""
    import redis

    return (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
            redis.exceptions.ReadOnlyError, OSError)


def auth_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError,
            redis.exceptions.NoPermissionError)
