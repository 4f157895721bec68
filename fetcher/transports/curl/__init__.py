"""Every use of libcurl (pycurl) in fetcher, and nowhere else.

- ``easy``: ``CurlTransport``, one easy handle: ``fetch`` blocks, or ``start``/``finish``
  around a multi handle.
- ``multi``: ``CurlTransfers``, a multi handle with a pool of easy handles, driven by
  ``socket_action`` from a backend's loop (epoll, or gevent's hub).
- ``sockets``: ``SocketPoller``, the epoll set of the sockets libcurl asks to watch.

Imported only for ``--client curl``.
"""
