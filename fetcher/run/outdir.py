"""The output folder and the manifest location, checked before the first request.

A run that cannot write its folder, journal or manifest must say so at once, in
one line with exit 2 (``ConfigError``), not after downloading everything (a
``--manifest`` that is a folder) nor with a traceback (``-o`` naming a file, a
read-only mount). ``check_output`` only looks (it creates nothing, so the API
can call it when a ``Fetcher`` is made); ``make_folder`` creates, with the
same errors.
"""

from __future__ import annotations

import os

from fetcher.errors import ConfigError
from fetcher.run.manifest import check_manifest_path


def check_output(out: str, manifest: str | None) -> None:
    """Raise ConfigError if ``out`` (or ``manifest``, when written) cannot be written.

    Looks at the nearest folder that exists, for a folder that is still to be made.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"output folder {out!r} is a file, not a folder: give another -o/--out")
    _check_writable(out, "output folder")
    if manifest is not None:
        check_manifest_path(manifest)
        _check_writable(os.path.dirname(manifest) or ".", f"manifest {manifest!r}: its folder")


def make_folder(path: str, what: str = "output folder") -> None:
    """``os.makedirs(path, exist_ok=True)``, a failure told as ConfigError."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {what} {path!r}: {exc.strerror or exc}") from None


def _check_writable(folder: str, what: str) -> None:
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise ConfigError(f"{what} {folder!r} cannot be made: {existing!r} is a file, not a folder")
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs here: access() below still answers
        read_only = False
    if read_only:
        raise ConfigError(f"{what} {folder!r} is on a read-only filesystem ({existing!r})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {folder!r} is not writable by this user ({existing!r})")
