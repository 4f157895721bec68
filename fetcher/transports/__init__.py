"""HTTP transports below ``fetch_one``, by ``--client`` name; see base.py for the seam.

Its one job: move the bytes of one GET into a receiver (``base.Receiver``), with the
same failure kinds whatever the client. ``factory`` makes the transport a worker
fetches through; ``requests`` is the default client, ``curl/`` holds all of libcurl.
Imported lazily like the backends: ``--client requests`` never imports pycurl.
May import: options, files, models, errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fetcher.transports.base import Transport

from fetcher.options import CLIENTS, CURL_INSTALL_HINT

__all__ = ["CLIENTS", "CURL_INSTALL_HINT", "as_transport"]


def as_transport(session: Any) -> Transport:
    """``session`` if it is a Transport; a caller's own ``requests.Session`` is wrapped, used as it is."""
    from fetcher.transports.base import Transport

    if isinstance(session, Transport):
        return session
    from fetcher.transports.requests import RequestsTransport

    return RequestsTransport(session)
