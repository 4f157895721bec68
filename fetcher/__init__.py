"""fetcher: a concurrent image/URL downloader.

The package imports nothing heavy on import: requests is loaded only when a
download starts, so the gevent backend can monkey-patch first.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
