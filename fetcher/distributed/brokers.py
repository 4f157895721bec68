"""Which broker a spec names: the factory of both brokers, kept out of the interface (broker.py).

The interface module imports neither broker; this one imports each lazily, only
when its spec is used (``--broker redis://`` needs redis-py, the manager broker nothing).
"""

from __future__ import annotations

from fetcher.distributed.broker import BrokerSpec, RedisSpec, ServeBroker, SessionFactory
from fetcher.distributed.protocol import RunRules


def serve_broker(spec: BrokerSpec, rules: RunRules, run_id: str, epoch: int, lease_timeout: float,
                 total: int | None) -> ServeBroker:
    """The serve side of ``spec``'s broker (not started yet)."""
    if isinstance(spec, RedisSpec):
        from fetcher.distributed.redis.serve import RedisServe

        return RedisServe(spec, rules, run_id, epoch, lease_timeout, total)
    from fetcher.distributed.manager.broker import ManagerServe

    return ManagerServe(spec, rules, run_id, epoch, lease_timeout, total)


def worker_sessions(spec: BrokerSpec) -> SessionFactory:
    """How a worker (or ``fetcher status``) opens a session to ``spec``'s broker."""
    if isinstance(spec, RedisSpec):
        from fetcher.distributed.redis.session import RedisSession

        return lambda timeout: RedisSession(spec, timeout)
    from fetcher.distributed.manager.broker import ManagerSession

    return lambda timeout: ManagerSession(spec, timeout)
