"""Executors of ``fetch_one``: a backend runs submitted tasks concurrently and hands back Results.

Its one job: concurrency (threads, processes, greenlets, one libcurl multi loop);
no policy, no printing. ``registry`` picks the class for a (backend, client)
pair; ``base`` is the interface. May import: download, transports, options, files,
models, errors.
"""

from fetcher.backends.registry import BACKENDS, backend_class, get_backend, prepare_process

__all__ = ["BACKENDS", "backend_class", "get_backend", "prepare_process"]
