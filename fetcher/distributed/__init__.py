"""Distributed mode: ``fetcher serve`` holds the work, ``fetcher work`` processes on any hosts do it.

    fetcher serve (one process)                        fetcher work (any number, any host)
    ┌──────────────────────────────────────────┐       ┌───────────────────────────────┐
    │ run_to_end: journal · scheduler · coll.  │       │ Worker loop (worker.py)       │
    │   engine ──submit/wait──► RemoteBackend  │       │   lease ─► local backend      │
    │                             │ (remote.py)│ TCP + │   (thread/process/gevent)     │
    │                        Coordinator ◄─────┼─authkey──  complete ◄─ results       │
    │             (manager/coordinator.py)     │ pickle│   heartbeat, release          │
    │   BaseManager Server (manager/rpc.py)    │       │   Link: deadline on every call│
    └──────────────────────────────────────────┘       └───────────────────────────────┘

- Policy stays in one place: the server's Scheduler decides what may start
  (per-host caps, delays, Retry-After pauses, retries) exactly as it does for a
  local pool; the RemoteBackend makes submitted tasks leasable instead of
  running them. A task holds its host slot from submit to settle, so a cap
  holds across every worker.
- Leases, not pops: a task leased to a worker that dies is handed out again
  after the lease timeout. Heartbeats keep healthy leases alive. The first
  completion of a URL wins; later ones change nothing.
- The journal is the server's state: kill the server, start it with the same
  command, and workers reconnect, resend what they finished, and carry on.

The drawing is the manager broker's (``manager/``); with ``--broker redis://`` the run's
streams in Redis stand between serve and its workers (``redis/``). Shared by both:
``broker`` (the interface), ``brokers`` (which broker a spec names), ``protocol`` (the
messages), ``server`` and ``remote`` (serve's run), ``worker``, ``client`` and ``outbox``
(the workers), ``events`` and ``cookies``.
"""
