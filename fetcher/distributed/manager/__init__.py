"""The manager broker: zero dependencies; ``fetcher serve`` itself is the broker.

``broker`` (ManagerServe: a Coordinator behind an RpcServer; ManagerSession: a worker's
side), ``coordinator`` (the lease protocol's methods), ``leases`` (the lease book),
``rpc`` (a BaseManager over TCP with deadlines on every call), ``auth`` (the shared key).
"""
