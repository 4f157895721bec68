"""serve's closing summary names every worker that took part, also one killed before the end."""

from __future__ import annotations

from fetcher import __version__
from fetcher.distributed.manager.coordinator import Coordinator
from fetcher.distributed.protocol import PROTOCOL, Grant, Welcome, WorkerInfo
from fetcher.models import FetchTask as Task
from fetcher.models import Result, Status
from fetcher.distributed.protocol import RunRules
from fetcher.options import Options


def test_a_worker_gone_silent_still_counts_in_the_summary(tmp_path):
    now = [1000.0]
    coord = Coordinator(RunRules(Options.create(out=str(tmp_path)).worker_form()), "run1", epoch=1, lease_timeout=10.0,
                        clock=lambda: now[0])
    for worker_id in ("victim", "rescuer"):
        info = WorkerInfo(worker_id, "host", 1, f"/out/{worker_id}", "thread", 4, 4)
        assert isinstance(coord.hello(PROTOCOL, __version__, info), Welcome)
    for i in range(3):
        coord.offer(Task(url=f"http://h.example/f{i}", name=f"f{i}", index=i))
    grant = coord.lease("victim", 2)
    assert isinstance(grant, Grant)
    done = [(lease, Result(url=t.url, status=Status.OK, path=t.name, bytes=1, index=t.index))
            for lease, t in grant.leases]
    assert coord.complete("victim", done) == 2
    now[0] += 60  # the victim is killed: it never calls again; the rescuer does
    coord.lease("rescuer", 1)
    live = {w["id"] for w in coord.stats()["workers"]}
    everyone = {w["id"]: w for w in coord.stats(gone_too=True)["workers"]}
    assert live == {"rescuer"}  # fetcher status HOST:PORT: the workers connected now
    assert everyone["victim"]["gone"] and everyone["victim"]["done"] == 2
    assert not everyone["rescuer"]["gone"]
