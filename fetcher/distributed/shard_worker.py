"""A worker's part in webdataset shards built across hosts: take ``serve``'s shard orders, report back.

The orders and reports (calls.py) travel on ``exchange`` calls, about every
``EXCHANGE_S`` while the run lasts; the shards are written by run/shard_build.py in
this worker's folder. An order that is not one of ours is dropped and logged.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from typing import TYPE_CHECKING, Any

from fetcher.distributed.dropped import Dropped
from fetcher.distributed.events import EventSink, Kind, WorkerEvent
from fetcher.distributed.calls import WireError, check_order
from fetcher.run.shard_build import ShardBuild
from fetcher.run.shard_rows import shard_stem

if TYPE_CHECKING:
    from fetcher.distributed.client import ServerConnection

log = logging.getLogger("fetcher.distributed")
EXCHANGE_S = 0.2
MAX_DONE = 100_000  # seqs remembered as carried out (an int each); far more than a broker ever resends
STAGING = "staging"


class WorkerShards:
    """The shards this worker writes for one run, and the reports not yet sent."""

    def __init__(self, out: str, emit: EventSink) -> None:
        self.out = out
        self.build = ShardBuild(out)
        self._emit = emit
        self._dropped = Dropped(log, "fetcher work")
        self._reports: list[dict[str, Any]] = [self._ask(number) for number in self.build.leftovers()]
        self._seen = 0  # the last order carried out, said on each exchange (calls.py: the broker keeps the rest)
        # The orders carried out, oldest first, by number and content: each goes once. Not by number
        # alone: serve's numbers are predictable, a forged order under one must not hide the real one.
        self._done: dict[tuple[int, str, int, str], None] = {}
        self.next_at = 0.0

    @property
    def dropped(self) -> int:
        return self._dropped.count

    def exchange(self, server: ServerConnection) -> None:
        """Send the reports, carry out the orders (LinkError: the reports wait for the next call)."""
        orders = server.exchange(self._reports, self._seen)
        self._reports = []
        self.next_at = time.monotonic() + EXCHANGE_S
        if not isinstance(orders, list):
            self._dropped("the shard orders", "not a list")
            return
        for order in orders:
            try:
                checked = check_order(order)
            except WireError as exc:
                self._dropped("a shard order", exc)
                continue
            self._once(checked)
        if self._reports:
            self.next_at = 0.0  # reports to send: at once

    def _once(self, order: dict[str, Any]) -> None:
        """Carry the order out unless this very order was (its answer was lost, and it came again). Known by
        its number and what it says, not "up to the last number": a forged order, whatever its number,
        hides no real one, and a mailbox holding two serves' orders (Redis, after a restart) is no reason
        to carry any out twice."""
        seq = order["seq"]
        done = (seq, order["op"], order["shard"], order["token"])
        if done in self._done:
            return
        if len(self._done) >= MAX_DONE:  # forget the older half: a broker resends only recent orders
            self._done = dict.fromkeys(list(self._done)[MAX_DONE // 2:])
        self._done[done] = None
        self._seen = seq
        self._carry_out(order)

    def _carry_out(self, order: dict[str, Any]) -> None:
        op, number, token = order["op"], order["shard"], order["token"]
        try:
            if op == "rows":
                if not self.build.rows(number, token, order["rows"]):
                    self._dropped(f"rows for shard {shard_stem(number)}", "not under the token it is open with")
            elif op == "seal":
                report = self.build.seal(number, token, order["count"])
                if report is None:
                    self._dropped(f"a seal of shard {shard_stem(number)}", "not a shard open here under that token")
                else:
                    self._reports.append(report)
            elif op == "commit":
                if self.build.commit(number, token) and token:
                    self._reports.append({"op": "committed", "shard": number, "token": token})
            elif self.build.abort(number, token):
                if token:
                    self._emit(WorkerEvent(Kind.WARNING, f"the server gave shard {shard_stem(number)} to others: "
                                                         "deleted here"))
        except (OSError, ValueError, TypeError, KeyError) as exc:  # a full disk, a row pyarrow refuses: to others
            self.build.abort(number, token)  # (serve fails a row whose shards broke MAX_GIVE_UPS times: no loop)
            self._reports.append({"op": "broken", "shard": number, "token": token,
                                  "why": f"{getattr(exc, 'strerror', None) or exc}"[:500]})

    def _ask(self, number: int) -> dict[str, Any]:
        return {"op": "ask", "shard": number, "host": socket.gethostname(), "out": self.out}

    def restarted(self, epoch: int) -> None:
        """A new serve: earlier serves' shards still filling are dropped (never recorded); sealed ones are kept
        and the new serve asked about them, since the one before may have recorded them just before it went.
        Orders and reports of the new serve (tokens start with its epoch) may have come first: kept."""
        new = str(epoch)
        self._reports = [r for r in self._reports if r["op"] == "ask" or r["token"].split(".", 1)[0] == new]
        self._reports += [self._ask(number) for number in self.build.drop_epochs_but(new)]

    def finish(self, done: bool) -> None:
        """The run is over: staged images nothing will need are removed."""
        if done and not self.build.open:
            shutil.rmtree(os.path.join(self.out, STAGING), ignore_errors=True)
