"""``--cookies FILE`` in distributed mode: the file's content travels to workers through the broker.

``serve`` reads the cookies file once (``pack``) and the content rides in the
``Options`` that ``Welcome`` carries, over the authenticated connection, never
on a worker's command line. A worker (``unpack``) writes it to a file of its
own, mode 0600 in a fresh private folder (0700) outside its output folder, for
the transports to load as they load any cookies file, and removes both when
it exits. A worker killed with SIGKILL leaves that folder behind in the temp
directory, readable by its user only, as the server's own cookies file is.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace

from fetcher.errors import ConfigError
from fetcher.options import Options

COOKIES_NAME = "cookies.txt"


def pack(options: Options) -> Options:
    """``options`` with its cookies file's content in ``cookies_text`` (serve side).

    Raises:
        ConfigError: the file cannot be read.
    """
    if not options.cookies:
        return options
    try:
        with open(options.cookies, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read cookies file {options.cookies!r}: {exc}") from None
    return replace(options, cookies_text=text)


def unpack(options: Options) -> tuple[Options, Callable[[], None]]:
    """``options`` with shipped cookies in a private file (worker side), and what removes that file."""
    if options.cookies_text is None:
        return options, _nothing
    folder = tempfile.mkdtemp(prefix="fetcher-cookies-")  # mode 0700
    path = os.path.join(folder, COOKIES_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(options.cookies_text)
    def forget() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(forget)  # also when the worker fails before its own cleanup runs
    return replace(options, cookies=path, cookies_text=None), forget


def _nothing() -> None:
    pass
