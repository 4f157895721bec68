"""``fetcher work``: lease URLs from a server, fetch them with a local backend, send the results back.

One loop in one thread (a greenlet under gevent) does all the talking, so the
connection is never shared: lease when slots are free, send finished results
in batches, renew held leases by heartbeat, and wait on the local backend in
between. Every call has a deadline. When the server cannot be reached, the
downloads in progress carry on, their results wait in the outbox, and the
worker reconnects with jittered exponential backoff; after a server restart
(a new epoch) it resends them, and the server accepts each success for a URL
still in flight, whatever lease it came under.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from secrets import token_hex

from fetcher.backoff import Backoff
from fetcher.backends.base import Backend, BackendFactory
from fetcher.distributed import cookies
from fetcher.distributed.broker import BrokerSpec
from fetcher.distributed.brokers import worker_sessions
from fetcher.distributed.client import FIRST, RESTARTED, ServerConnection
from fetcher.distributed.events import EventSink, Kind, Outcome, WorkerEvent, ignore
from fetcher.distributed.outbox import BATCH, Outbox
from fetcher.distributed.protocol import Finished, Grant, LeaseId, RunRules, Wait, WorkerInfo
from fetcher.distributed.shard_worker import WorkerShards
from fetcher.errors import LinkError
from fetcher.errors import ConfigError
from fetcher.models import FetchTask as Task
from fetcher.models import Result
from fetcher.options import Options, remember_secrets

MAX_IDLE_POLL_S = 0.25  # longest wait between lease calls when the server has nothing: an idle call costs it ~50 µs
MAX_PAUSE_S = 0.5  # longest the loop waits on the local backend
FLUSH_AFTER_S = 0.05  # a finished result waits at most this long for others to share its call
GOODBYE_TIMEOUT_S = 3.0
# After a server restart, new leases wait this long, so that workers reconnecting a
# little later can first claim back the downloads they still run (see adopt).
RESTART_SETTLE_S = 2.0


@dataclass(frozen=True)
class WorkerConfig:
    """What ``fetcher work`` was told.

    Attributes:
        prefetch: tasks held beyond the pool so the pool never waits for a round
            trip; the worker leases when this many slots are free (0: one by one).
        rpc_timeout: deadline of every call to the broker.
        give_up_after: seconds without reaching the broker before giving up.
    """

    broker: BrokerSpec
    out: str
    backend: str = "thread"
    pool: int = 8
    prefetch: int = 2
    rpc_timeout: float = 10.0
    give_up_after: float = 600.0


class Worker:
    """Runs until the server says the run is over or stops it, the broker is unreachable, or Ctrl-C.

    Args:
        config: the command's settings.
        backend_factory: replaces ``config.backend`` (benchmarks use a backend that does no HTTP).
        on_event: gets what the worker has to tell (connected, lost, gave up, ...); it prints nothing itself.
    """

    def __init__(self, config: WorkerConfig, backend_factory: BackendFactory | None = None,
                 on_event: EventSink = ignore) -> None:
        self.config = config
        host, pid = socket.gethostname(), os.getpid()
        self.info = WorkerInfo(f"{host}-{pid}-{token_hex(2)}", host, pid, os.path.abspath(config.out),
                               config.backend, config.pool, config.pool + config.prefetch)
        self._backend_factory = backend_factory
        self._emit = on_event
        self._where = config.broker.where
        self._batch = max(1, config.prefetch)
        self._server = ServerConnection(worker_sessions(config.broker), self._where, self.info,
                                        config.rpc_timeout, on_event)
        self._held: dict[LeaseId, Task] = {}  # lease id -> task running here
        self._running: dict[str, LeaseId] = {}  # URL -> the lease it runs under now
        self._outbox = Outbox()
        self._next_lease = self._next_heartbeat = 0.0
        self._idle = 0
        self._forget_cookies: Callable[[], None] = lambda: None
        self._end: Finished | None = None
        self._done: Counter[str] = Counter()
        self._shards: WorkerShards | None = None  # webdataset runs: the shards serve has this worker write

    def run(self) -> Outcome:
        """Work; returns how it ended.

        Raises:
            ConfigError: the server refused the authkey or this version.
        """
        if not self._first_contact():
            return Outcome.UNREACHABLE
        assert self._server.welcome is not None
        local = self._local_options(self._server.welcome.rules)
        if local.dataset.output_format == "webdataset":
            self._shards = WorkerShards(self.info.out, self._emit)
        backend = (self._backend_factory or _registered(self.config.backend))(local, None)
        shut = False
        try:
            backend.__enter__()
            code = self._loop(backend)
        except KeyboardInterrupt:
            backend.shutdown(cancel=True)
            shut = True
            self._leave(backend)
            return Outcome.INTERRUPTED
        finally:
            if not shut:
                backend.shutdown(cancel=True)
            self._server.close()
            self._forget_cookies()
        if self._shards is not None:
            self._shards.finish(code is Outcome.DONE)
        done = ", ".join(f"{n} {status}" for status, n in sorted(self._done.items())) or "nothing"
        if code is not Outcome.UNREACHABLE:
            self._emit(WorkerEvent(Kind.ENDED, f"{'the server stopped the run' if code is Outcome.STOPPED else 'the run is over'}; "
                                              f"this worker finished {done}"))
        return code

    # -- connection --------------------------------------------------------------------------

    def _first_contact(self) -> bool:
        while not self._server.up:
            if self._gave_up():
                return False
            time.sleep(max(0.0, self._server.next_attempt - time.monotonic()))
            self._connect()
        return True

    def _connect(self) -> None:
        how = self._server.connect([(lease_id, task.url) for lease_id, task in self._held.items()])
        if how is None:
            return
        self._idle = 0
        self._next_lease = self._next_heartbeat = time.monotonic()
        if how == FIRST:
            assert self._server.welcome is not None
            self._emit(WorkerEvent(Kind.CONNECTED, f"connected to {self._where} (run {self._server.welcome.run_id}): "
                                   f"{self.config.backend} backend, pool {self.config.pool}, files into {self.info.out}"))
        elif how == RESTARTED:
            unsent, again = len(self._outbox), self._outbox.resend_recent()
            self._emit(WorkerEvent(Kind.RESTARTED, f"the server restarted; carrying on, {unsent} results to send "
                                   f"and {again} recent successes to send again"))
            self._next_lease += RESTART_SETTLE_S
            if self._shards is not None and self._server.welcome is not None:
                self._shards.restarted(self._server.welcome.epoch)
        else:
            self._emit(WorkerEvent(Kind.RECONNECTED, f"reconnected to {self._where}"))

    def _gave_up(self) -> bool:
        if self._server.down_for() <= self.config.give_up_after:
            return False
        self._emit(WorkerEvent(Kind.GAVE_UP, f"giving up: no answer from the server at {self._where} "
                               f"for {self.config.give_up_after:g} s"))
        return True

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self, backend: Backend) -> Outcome:
        while self._end is None:
            if not self._server.up:
                if self._gave_up():
                    return Outcome.UNREACHABLE
                if time.monotonic() >= self._server.next_attempt:
                    self._connect()
            if self._server.up:
                self._talk(backend)
            for result in backend.wait(self._pause()):
                self._finished(result)
        return Outcome.STOPPED if self._end.interrupted else Outcome.DONE

    def _talk(self, backend: Backend) -> None:
        try:
            now = time.monotonic()
            if self._outbox and (now - self._outbox.since >= FLUSH_AFTER_S or self._free() >= self._batch
                                 or len(self._outbox) >= BATCH):
                self._flush()
            if self._held and now >= self._next_heartbeat:
                self._heartbeat()
            if self._shards is not None and now >= self._shards.next_at:
                self._shards.exchange(self._server)
            if self._end is None and self._free() >= self._batch and now >= self._next_lease:
                self._lease(backend)
        except LinkError:
            pass  # the connection noted it and will reconnect

    def _pause(self) -> float:
        now = time.monotonic()
        due = [now + MAX_PAUSE_S]
        if not self._server.up:
            due.append(self._server.next_attempt)
        else:
            if self._outbox:
                due.append(self._outbox.since + FLUSH_AFTER_S)
            if self._held:
                due.append(self._next_heartbeat)
            if self._free() >= self._batch:
                due.append(self._next_lease)
            if self._shards is not None:
                due.append(self._shards.next_at)
        return max(0.0, min(due) - now)

    def _free(self) -> int:
        return self.info.capacity - len(self._held)

    def _lease(self, backend: Backend) -> None:
        reply = self._server.lease(self._free())
        now = time.monotonic()
        if isinstance(reply, Finished):
            self._end = reply
        elif isinstance(reply, Grant):
            self._idle, self._next_lease = 0, now
            for lease_id, task in reply.leases:
                self._start(backend, lease_id, task)
        elif isinstance(reply, Wait):  # back off while the server has nothing, so idle workers cost it little
            self._idle += 1
            polls = Backoff(first=reply.seconds, cap=MAX_IDLE_POLL_S, jitter=0.0, max_doublings=6)
            self._next_lease = now + polls.delay(self._idle - 1)

    def _start(self, backend: Backend, lease_id: LeaseId, task: Task) -> None:
        earlier = self._running.get(task.url)
        self._held[lease_id] = task
        self._running[task.url] = lease_id
        if earlier is not None:  # leased again while still running here: one download, under the new lease
            self._held.pop(earlier, None)
            return
        backend.submit(task)

    def _finished(self, result: Result) -> None:
        lease_id = self._running.pop(result.url, None)
        if lease_id is None:
            return
        self._held.pop(lease_id, None)
        self._outbox.add(lease_id, result)
        self._done[result.status.value] += 1

    def _flush(self) -> None:
        self._outbox.flush(self._server.complete)

    def _heartbeat(self) -> None:
        assert self._server.welcome is not None
        reply = self._server.heartbeat(list(self._held))
        if isinstance(reply, Finished):
            self._end = reply
        self._next_heartbeat = time.monotonic() + self._server.welcome.heartbeat_s

    # -- leaving -----------------------------------------------------------------------------

    def _leave(self, backend: Backend) -> None:
        """Ctrl-C: send what succeeded, give back the rest, so no URL waits for a lease timeout.

        A failure met while the backend was being cancelled (``cancelled``, or e.g. an
        ``io`` error from a ``.part`` file taken away under a download) says nothing
        about the URL: it goes back to the server with the unfinished ones.
        """
        for result in _drain(backend):
            if result.ok:
                self._finished(result)
        held = list(self._held)
        try:
            self._server.fresh(GOODBYE_TIMEOUT_S)  # the interrupt may have cut a call in half
            self._flush()
            returned = self._server.release(held, True)
        except (LinkError, ConfigError) as exc:
            self._emit(WorkerEvent(Kind.WARNING, f"interrupted; could not return {len(held)} leases ({exc}): the "
                                   "server hands them out again after its lease timeout"))
            return
        self._emit(WorkerEvent(Kind.LEFT, f"interrupted; returned {returned} unfinished leases to the server"))

    def _local_options(self, rules: RunRules) -> Options:
        """The server's fetching rules, checked here, with this worker's folder, backend and pool."""
        form = dict(rules.options)
        shipped, self._forget_cookies = cookies.unpack(rules)  # the server's cookies, in a file of ours
        if shipped is not None:
            form["cookies"] = shipped
        elif form.get("cookies") and not os.path.isfile(form["cookies"]):
            self._emit(WorkerEvent(Kind.WARNING, f"warning: the server's cookies file {form['cookies']!r} is not "
                                   "on this host; fetching without cookies"))
            form["cookies"] = None
        # A shard's row done again here finds its image staged by the first try: fetched and checked again,
        # so that its fields and sha256 are those of the bytes in the shard.
        shards = {"output_format": "webdataset", "on_exists": "overwrite"} \
            if form.get("output_format") == "webdataset" else {}
        local = Options.from_worker_form(form, out=os.path.abspath(self.config.out), backend=self.config.backend,
                                         pool=self.config.pool, **shards)
        remember_secrets(local)  # the run's header values are masked in this worker's messages too
        return local


def _registered(name: str) -> BackendFactory:
    from fetcher.backends import get_backend

    return get_backend(name)


def _drain(backend: Backend, rounds: int = 1000) -> Iterator[Result]:
    for _ in range(rounds):
        results = backend.wait(0)
        if not results:
            return
        yield from results

