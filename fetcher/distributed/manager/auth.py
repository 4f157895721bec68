"""The shared key: from ``FETCHER_AUTHKEY`` or ``--authkey-file``, never argv, never a default.

Whoever holds the key can make the other end unpickle anything, that is run
code there; so the key is never taken from a command line (visible in ``ps``
and shell history), and ``serve`` without one makes a strong one and keeps it
in a file only its owner can read.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable

from fetcher.errors import ConfigError
from fetcher.run.journal import JOURNAL_DIR

ENV_VAR = "FETCHER_AUTHKEY"
KEY_FILE = "authkey"
SHORT_KEY = 16


def read_key(path: str | None, warn: Callable[[str], None]) -> bytes | None:
    """The key from ``path`` if given, else from ``FETCHER_AUTHKEY``; None if neither is set.

    Raises:
        ConfigError: the file cannot be read, or the key is empty.
    """
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read --authkey-file {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
        if not text:
            raise ConfigError(f"--authkey-file {path!r} is empty")
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warn(f"warning: authkey file {path!r} can be read by other users: chmod 600 {path}")
        where = f"--authkey-file {path!r}"
    else:
        text = os.environ.get(ENV_VAR, "").strip()
        if ENV_VAR not in os.environ:
            return None
        if not text:
            raise ConfigError(f"{ENV_VAR} is set but empty")
        where = ENV_VAR
    if len(text) < SHORT_KEY:
        warn(f"warning: the authkey from {where} has only {len(text)} characters; anyone who guesses it "
             "can run code on the server and the workers")
    return text.encode()


def server_key(path: str | None, out: str, warn: Callable[[str], None]) -> tuple[bytes, str | None]:
    """The server's key, and the file it was stored in when none was given (else None).

    Without ``--authkey-file`` or ``FETCHER_AUTHKEY``, the key lives in
    ``OUT/.fetcher/authkey`` (mode 0600), made on the first start and reused on
    the next, so a restarted server keeps talking to its workers.
    """
    key = read_key(path, warn)
    if key is not None:
        return key, None
    stored = os.path.join(out, JOURNAL_DIR, KEY_FILE)
    os.makedirs(os.path.dirname(stored), exist_ok=True)
    try:
        fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return read_key(stored, warn) or b"", stored


def worker_key(path: str | None, warn: Callable[[str], None]) -> bytes:
    """A worker's (or ``status``'s) key.

    Raises:
        ConfigError: none was given.
    """
    key = read_key(path, warn)
    if key is None:
        raise ConfigError(f"no authkey: set {ENV_VAR} or pass --authkey-file PATH with the server's key "
                          f"(fetcher serve prints where it keeps it)")
    return key
