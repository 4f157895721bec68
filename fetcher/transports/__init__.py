"""HTTP transports below ``fetch_one``, by ``--client`` name; see base.py for the seam.

Imported lazily like the backends: ``--client requests`` never imports pycurl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fetcher.transports.base import Transport

CLIENTS = ("requests", "curl")
CURL_INSTALL_HINT = "pip install 'fetcher[curl]' (or: pip install pycurl)"


def as_transport(session: Any) -> Transport:
    """``session`` if it is a Transport; a caller's own ``requests.Session`` is wrapped, used as it is."""
    from fetcher.transports.base import Transport

    if isinstance(session, Transport):
        return session
    from fetcher.transports.requests_transport import RequestsTransport

    return RequestsTransport(session)
