"""``--cookies FILE`` in distributed mode: the file's content travels to workers through the broker.

``serve`` reads the cookies file once (``pack``) and the content rides in the
``RunRules`` that ``Welcome`` carries, over the authenticated connection, never
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

from fetcher.distributed.protocol import RunRules
from fetcher.errors import ConfigError
from fetcher.options import Options

COOKIES_NAME = "cookies.txt"


def pack(options: Options) -> RunRules:
    """What workers are sent: ``options``' worker form, and its cookies file's content (serve side).

    Raises:
        ConfigError: the file cannot be read.
    """
    form = options.worker_form()
    if not options.politeness.cookies:
        return RunRules(form)
    try:
        with open(options.politeness.cookies, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read cookies file {options.politeness.cookies!r}: {exc}") from None
    return RunRules(form, text)


def unpack(rules: RunRules) -> tuple[str | None, Callable[[], None]]:
    """The path of a private file holding the shipped cookies, None if none came (worker side), and
    what removes that file."""
    if rules.cookies_text is None:
        return None, _nothing
    folder = tempfile.mkdtemp(prefix="fetcher-cookies-")  # mode 0700
    path = os.path.join(folder, COOKIES_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(rules.cookies_text)
    def forget() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(forget)  # also when the worker fails before its own cleanup runs
    return path, forget


def _nothing() -> None:
    pass
