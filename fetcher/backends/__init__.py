"""Backends by name, imported only when chosen: ``--backend thread`` never imports gevent."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fetcher.errors import BackendError

if TYPE_CHECKING:
    from fetcher.backends.base import Backend

BACKENDS: dict[str, str] = {
    "thread": "fetcher.backends.thread:ThreadBackend",
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
