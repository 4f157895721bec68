"""fetcher: a concurrent image/URL downloader.

    from fetcher import fetch, Fetcher, Task, Result
    from fetcher import AsyncFetcher, afetch     # asyncio, on the caller's loop

The package imports nothing heavy on import: requests is loaded only when the
first of these names is used (PEP 562 module ``__getattr__``), so the gevent
backend can monkey-patch first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AsyncFetcher", "Fetcher", "Result", "Task", "__version__", "afetch", "fetch"]

if TYPE_CHECKING:
    from fetcher.aio import AsyncFetcher, afetch
    from fetcher.api import Fetcher, Task, fetch
    from fetcher.models import Result

_LAZY = {"fetch": "fetcher.api", "Fetcher": "fetcher.api", "Task": "fetcher.api", "Result": "fetcher.models",
         "AsyncFetcher": "fetcher.aio", "afetch": "fetcher.aio"}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'fetcher' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
