"""serve's per-result path over Redis (issue 29): the fast encoders and decoder say what the general ones said.

dump_task writes a plain task by a template, dump_results leaves out fields at their default,
the reader checks each field as JSON decoded it and builds one Result; RunStreams.place sends a
batch of tasks as one argument and reads the ids back as one line. Each is held here against the
general path (or a real redis-server), and the reader still refuses what it must.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis_helper import RedisServer

from fetcher.distributed.broker import RedisSpec
from fetcher.distributed.protocol import WorkerInfo
from fetcher.distributed.redis import wire
from fetcher.distributed.redis.common import message_of
from fetcher.distributed.redis.streams import RunStreams
from fetcher.distributed.calls import WireError
from fetcher.models import ErrorInfo, FetchTask, Result, Status

INFO = WorkerInfo("w1", "host-a", 7, "/out", "thread", 8, 8)
TEXT = st.text(max_size=12)  # any code point, surrogates and line separators included
FLOATS = st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e9)

TASKS = st.builds(FetchTask, url=st.text(min_size=1, max_size=40), name=TEXT,
                  index=st.integers(min_value=0, max_value=2**53), attempt=st.integers(min_value=1, max_value=99),
                  checksum=st.none() | TEXT, meta=st.none() | st.dictionaries(TEXT, TEXT, max_size=2),
                  provisional_name=st.booleans(),
                  headers=st.none() | st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=2).map(tuple),
                  addresses=st.none() | st.lists(TEXT, min_size=1, max_size=3).map(tuple))

RESULTS = st.builds(
    Result, url=TEXT, status=st.sampled_from(list(Status)), path=st.none() | TEXT,
    bytes=st.integers(min_value=0, max_value=2**60), sha256=st.none() | TEXT,
    http_status=st.none() | st.integers(min_value=0, max_value=999), content_type=st.none() | TEXT,
    final_url=st.none() | TEXT, error=st.none() | st.builds(ErrorInfo, TEXT, TEXT),
    attempts=st.integers(min_value=0, max_value=99), elapsed_s=FLOATS | st.integers(min_value=0, max_value=99),
    index=st.integers(min_value=0, max_value=2**53), retryable=st.booleans(), retry_after=st.none() | FLOATS,
    extra=st.dictionaries(TEXT, TEXT | st.integers(), max_size=2), after_head_s=st.none() | FLOATS,
    staged=st.integers(min_value=0, max_value=2))
SENT = [f.name for f in dataclasses.fields(Result) if f.name not in ("content", "meta")]


@given(TASKS)
def test_a_task_by_the_template_is_byte_for_byte_the_encoders(task):
    assert wire.dump_task(task) == wire._dump_task(task)
    assert "\n" not in wire.dump_task(task)  # RunStreams.place joins a batch with newlines


@given(RESULTS, TEXT)
def test_every_field_of_a_result_round_trips_with_defaults_left_out(result, lease):
    kind, message = wire.load(wire.dump_results(INFO, [(lease, result)]).encode("utf-8", "surrogatepass"))
    [(back_lease, back)] = wire.results_of(message)
    assert kind == "results" and back_lease == lease
    for name in SENT:
        if name != "extra":
            assert getattr(back, name) == getattr(result, name), name
    assert back.extra == {**result.extra, "worker": {"id": "w1", "host": "host-a", "out": "/out"}}


def test_a_plain_result_sends_only_what_differs_from_a_default():
    body = json.loads(wire.dump_results(INFO, [("1-0", Result("http://h/a", Status.OK, path="a", bytes=9,
                                                                 index=4))]))["items"][0][1]
    assert body == {"url": "http://h/a", "status": "ok", "index": 4, "path": "a", "bytes": 9}


@pytest.mark.parametrize("field, value", [
    ("after_head_s", "soon"), ("after_head_s", True), ("staged", 1.5), ("bytes", True), ("index", "3"),
    ("retryable", 1), ("elapsed_s", None), ("url", 5), ("path", ["a"]), ("status", ["ok"]), ("status", "fine"),
    ("error", ["kind"]), ("error", ["kind", 3]), ("extra", [1])])
def test_a_result_field_of_the_wrong_type_is_refused(field, value):
    body = {"url": "http://h/a", "status": "ok", field: value}
    with pytest.raises(WireError):
        wire.results_of({"worker": {"id": "w"}, "items": [["1-0", body]]})


def test_a_result_without_url_or_of_the_wrong_shape_is_refused():
    for item in (["1-0", {"status": "ok"}], ["1-0"], [1, {"url": "u", "status": "ok"}], ("1-0", {}), "x"):
        with pytest.raises(WireError):
            wire.results_of({"worker": {"id": "w"}, "items": [item]})


def test_keys_that_are_no_result_field_are_ignored():
    [(_, result)] = wire.results_of({"worker": {"id": "w"}, "items": [
        ["1-0", {"url": "u", "status": "failed", "content": "x", "meta": 1, "future": [], "error": ["io", "m"]}]]})
    assert (result.url, result.status, result.error, result.content, result.meta) == \
        ("u", Status.FAILED, ErrorInfo("io", "m"), None, None)


def test_a_batch_of_awkward_tasks_lands_one_entry_each_in_order(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        streams = RunStreams(RedisSpec(server.url, "fast"), 60.0)
        tasks = [FetchTask(url=f"http://h/{i}?q=\u00e9\u2028", name=f"n\n{i}\r\u0085", index=i,
                           addresses=("10.0.0.1",) if i % 2 else None) for i in range(1500)]
        for task in tasks:
            streams.book.offer(task)
        streams.place()
        entries = streams.redis.xrange(streams.keys.tasks, "-", "+")
        assert len(entries) == len(tasks)
        for task, (entry, fields) in zip(tasks, entries):
            assert streams.book.slots[task.url].entry == entry.decode()
            assert wire.task_of(wire.load(message_of(fields))[1]) == task
        streams.redis.close()
    finally:
        server.stop()


def test_accepted_leases_are_acknowledged_and_deleted_by_the_batch(tmp_path):
    """1,200 tasks leased by a real worker session and completed: serve acknowledges and deletes every
    lease it accepted (in chunks inside Redis), and hands each Result on once."""
    from fetcher.distributed.protocol import Grant, RunRules
    from fetcher.distributed.redis.serve import RedisServe
    from fetcher.distributed.redis.session import RedisSession
    from fetcher.options import Options

    server = RedisServer(tmp_path / "redis").start()
    spec = RedisSpec(server.url, "acks")
    serve = RedisServe(spec, RunRules(Options.create(out=str(tmp_path)).worker_form()), "run", 1, 60.0, None)
    session = RedisSession(spec, 10.0)
    try:
        serve.start()
        tasks = [FetchTask(url=f"http://h/{i}", name=f"f{i}", index=i) for i in range(1200)]
        for task in tasks:
            serve.offer(task)
        assert serve.collect(0) == []
        session.hello(INFO, [])
        leased = []
        for _ in range(20):
            grant = session.lease(INFO.id, 1200 - len(leased))
            if isinstance(grant, Grant):
                leased.extend(grant.leases)
            if len(leased) == 1200:
                break
        session.complete(INFO.id, [(lease, Result(task.url, Status.OK, path=task.name, index=task.index))
                                   for lease, task in leased])
        got: list[Result] = []
        for _ in range(50):
            got.extend(serve.collect(0.1))
            if len(got) == 1200:
                break
        assert sorted(r.index for r in got) == list(range(1200))
        assert serve._streams.redis.xlen(serve._streams.keys.tasks) == 0
        assert serve._streams.redis.xpending(serve._streams.keys.tasks, "workers")["pending"] == 0
    finally:
        serve.stop(completed=False)
        server.stop()


@pytest.mark.parametrize("value", ["soon", True, [1]])
def test_the_manager_refuses_a_result_whose_after_head_s_is_no_number(value):
    from fetcher.distributed.calls import check_result

    with pytest.raises(WireError):
        check_result(Result("http://h/a", Status.OK, after_head_s=value))
    assert check_result(Result("http://h/a", Status.OK, after_head_s=0.25)).after_head_s == 0.25


def test_the_journal_writes_each_results_own_worker_label(tmp_path):
    """The journal makes a worker label's JSON once while the same label comes: never another's."""
    import sqlite3

    from fetcher.run.journal import Journal, journal_path

    journal = Journal(str(tmp_path))
    journal.start_run()
    one, two = {"id": "w1", "host": "a", "out": "/o"}, {"id": "w2", "host": "b", "out": "/p"}
    extras = [{"worker": one}, {"worker": one}, {"worker": two}, {"worker": dict(one)}, {"worker": one, "k": 1}, {}]
    journal.admit_many([(f"http://h/{i}", f"f{i}") for i in range(len(extras))])
    for i, extra in enumerate(extras):
        journal.record(Result(f"http://h/{i}", Status.OK, path=f"f{i}", extra=extra))
    journal.close()
    db = sqlite3.connect(journal_path(str(tmp_path)))
    stored = dict(db.execute("SELECT url, extra FROM urls").fetchall())
    db.close()
    assert [json.loads(stored[f"http://h/{i}"]) if stored[f"http://h/{i}"] else {} for i in range(len(extras))] == extras
