"""Backends by (backend, client) pair: one place that knows which pairs exist, imported only when chosen.

``--backend`` says how downloads run concurrently, ``--client`` which HTTP client
moves the bytes. Each supported pair is one named class; the pair is checked
here, once, and an unsupported one is refused with the list of those that exist.
``--backend thread`` never imports gevent, ``--client requests`` never imports pycurl.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fetcher.auto import AUTO, choose
from fetcher.errors import BackendError

if TYPE_CHECKING:
    from fetcher.backends.base import Backend, BackendFactory, SessionFactory
    from fetcher.options import Options

PAIRS: dict[tuple[str, str], str] = {
    # The thread backend is given its transport by transports.factory: a requests Session or
    # a libcurl easy handle per thread, the same class either way.
    ("thread", "requests"): "fetcher.backends.thread:ThreadBackend",
    ("thread", "curl"): "fetcher.backends.thread:ThreadBackend",
    ("process", "requests"): "fetcher.backends.process:ProcessBackend",  # threads in each worker
    ("process", "curl"): "fetcher.backends.process:ProcessCurlBackend",  # a multi loop in each worker
    ("gevent", "requests"): "fetcher.backends.gevent:GeventBackend",  # greenlets sharing a Session
    ("gevent", "curl"): "fetcher.backends.gevent_curl:GeventCurlBackend",  # one multi handle on gevent's loop
    ("multi", "curl"): "fetcher.backends.multi:MultiBackend",  # one multi handle on the engine's thread
}
BACKENDS: tuple[str, ...] = tuple(dict.fromkeys(name for name, _ in PAIRS))
_WHY_NOT = {("multi", "requests"): "--backend multi drives libcurl's multi interface: use it with --client curl"}


def backend_class(name: str, client: str) -> type[Backend]:
    """The Backend class for ``--backend name --client client``.

    Raises:
        BackendError: no backend has that name, or it does not run with that client.
    """
    _check_name(name)
    if name == AUTO:  # fetcher work --backend auto: the client is the server's, known only now
        name = choose(AUTO, client)[0]
    target = PAIRS.get((name, client))
    if target is None:
        why = _WHY_NOT.get((name, client), f"--backend {name} does not run with --client {client}")
        pairs = ", ".join(f"{b} + {c}" for b, c in PAIRS)
        raise BackendError(f"{why} (the pairs fetcher has: {pairs})")
    module_name, class_name = target.split(":")
    backend: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return backend


def get_backend(name: str) -> BackendFactory:
    """What makes the backend ``name`` for a run, choosing its class by the run's ``options.transport.client``.

    For callers that know the backend before the options (``fetcher work`` learns the
    client from its server).

    Raises:
        BackendError: no backend has that name (the client is checked when it is called).
    """
    _check_name(name)

    def create(options: Options, session_factory: SessionFactory | None = None) -> Backend:
        return backend_class(name, options.transport.client)(options, session_factory)

    return create


def _check_name(name: str) -> None:
    if name != AUTO and name not in BACKENDS:
        choices = ", ".join((AUTO, *sorted(BACKENDS)))
        raise BackendError(f"unknown backend {name!r}; choose one of: {choices}")


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
