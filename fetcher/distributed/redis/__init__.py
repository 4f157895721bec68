"""The Redis Streams broker (``fetcher serve --broker redis://...``; needs redis-py).

``common`` (keys, connections, errors), ``streams`` (the run's streams, read and written),
``serve`` (RedisServe, serve's side), ``session`` (RedisSession, a worker's side),
``flights`` (what is leased to whom), ``wire`` (JSON on the wire, versioned).
"""
