"""Backends by name, imported only when chosen: ``--backend thread`` never imports gevent."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fetcher.errors import BackendError

if TYPE_CHECKING:
    from fetcher.backends.base import Backend

BACKENDS: dict[str, str] = {
    "thread": "fetcher.backends.thread:ThreadBackend",
    "process": "fetcher.backends.process:ProcessBackend",
    "gevent": "fetcher.backends.gevent:GeventBackend",
    "multi": "fetcher.backends.multi:MultiBackend",  # libcurl's multi interface, one thread; --client curl
}


def get_backend(name: str) -> type[Backend]:
    """The Backend class registered as ``name``.

    Raises:
        BackendError: no backend has that name.
    """
    try:
        target = BACKENDS[name]
    except KeyError:
        choices = ", ".join(sorted(BACKENDS))
        raise BackendError(f"unknown backend {name!r}; choose one of: {choices}") from None
    module_name, class_name = target.split(":")
    backend: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return backend


def prepare_process(name: str) -> None:
    """Process-wide setup a backend needs before requests is imported; the CLI calls it first.

    For gevent that is ``gevent.monkey.patch_all()``, which must run before
    ``requests``, ``urllib3`` or ``ssl`` is imported. If one of them already is,
    patching now would be unsafe (gevent's MonkeyPatchWarning), so this raises
    instead. Other backends need nothing.

    Raises:
        BackendError: gevent is missing, or the process imported requests/ssl too early.
    """
    if name != "gevent":
        return
    import sys

    try:
        from gevent import monkey
    except ImportError as exc:
        raise BackendError(f"--backend gevent needs the gevent package: {exc}") from None
    if monkey.is_module_patched("socket"):
        return
    early = [module for module in ("ssl", "urllib3", "requests") if module in sys.modules]
    if early:
        raise BackendError(f"--backend gevent must monkey-patch before {', '.join(early)} is imported, "
                           "and this process already imported it: call gevent.monkey.patch_all() "
                           "before importing requests, or use another backend")
    monkey.patch_all()
