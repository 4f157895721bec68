"""A worker's outbox: at-least-once delivery in batches, and recent successes for a restarted server."""

from __future__ import annotations

import pytest

from fetcher.distributed import outbox
from fetcher.distributed.outbox import Outbox
from fetcher.errors import LinkError
from fetcher.models import ErrorKind, Result, Status, failed


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def ok(i: int) -> Result:
    return Result(url=f"http://h/{i}", status=Status.OK, index=i)


def test_what_the_server_did_not_take_stays_for_the_next_flush(monkeypatch):
    monkeypatch.setattr(outbox, "BATCH", 2)
    box = Outbox()
    for i in range(5):
        box.add(i, ok(i))
    sent: list[list[int]] = []

    def flaky(batch):
        if len(sent) == 1:
            raise LinkError("lost the server")
        sent.append([lease for lease, _ in batch])

    with pytest.raises(LinkError):
        box.flush(flaky)
    assert len(box) == 3
    box.flush(lambda batch: sent.append([lease for lease, _ in batch]))
    assert sent == [[0, 1], [2, 3], [4]] and len(box) == 0


def test_recent_successes_are_sent_again_to_a_restarted_server():
    clock = Clock()
    box = Outbox(clock)
    box.add(1, ok(1))
    box.add(2, failed("http://h/2", ErrorKind.TIMEOUT, "slow"))
    box.flush(lambda batch: None)
    clock.now += outbox.RESEND_RECENT_S + 1
    box.add(3, ok(3))
    box.flush(lambda batch: None)
    assert box.resend_recent() == 1  # 3 only: 1 is too old, 2 failed
    resent: list = []
    box.flush(resent.extend)
    assert [lease for lease, _ in resent] == [3]
    assert box.resend_recent() == 1  # acknowledged again, by a server that may crash too
