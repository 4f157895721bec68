"""Property-based tests of both brokers' wire formats: any bytes, any JSON, any pickled object read
from a broker end as a message of ours or a WireError (the reader drops it), never another exception;
and what one end writes, the other reads back unchanged. Profiles: tests/props.py."""

from __future__ import annotations

import json
import pickle

import props  # noqa: F401 - loads the hypothesis profile
from hypothesis import given
from hypothesis import strategies as st

from fetcher.distributed.redis import wire
from fetcher.distributed.calls import WireError, check_call
from fetcher.distributed.protocol import WorkerInfo
from fetcher.distributed.manager.rpc import RpcServer
from fetcher.models import ErrorInfo, FetchTask, Result, Status

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)
READERS = [wire.load, wire.worker_of, wire.rules_of, wire.text_of]
INFO = WorkerInfo("w1", "host", 1, "/out", "thread", 4, 5)


def message_like() -> st.SearchStrategy[dict]:
    """Dicts shaped nearly like ours: the right version and kind, fields of any JSON."""
    return st.fixed_dictionaries({"v": st.sampled_from([1, 1, 2, "1", True]),
                                  "kind": st.sampled_from(["task", "results", "release", "x"])},
                                 optional={"task": JSON, "worker": JSON, "items": JSON, "lease": JSON, "leaving": JSON})


TASK_LIKE = st.fixed_dictionaries({"url": st.text(max_size=10) | JSON, "name": st.text(max_size=10) | JSON},
                                   optional={"index": JSON, "attempt": JSON, "checksum": JSON, "meta": JSON,
                                             "provisional": JSON, "headers": JSON | st.lists(JSON, max_size=3)})
RESULT_LIKE = st.fixed_dictionaries({"url": st.text(max_size=10) | JSON, "status": st.sampled_from(["ok", "failed"]) | JSON},
                                    optional={"error": JSON | st.lists(st.text(max_size=5), min_size=2, max_size=2),
                                              "bytes": JSON, "path": JSON, "index": JSON, "extra": JSON,
                                              "attempts": JSON, "elapsed_s": JSON, "http_status": JSON})


@given(TASK_LIKE)
def test_task_bodies_of_any_shape(body):
    try:
        task = wire.task_of({"task": body})
    except WireError:
        return
    assert isinstance(task.url, str) and isinstance(task.name, str)


@given(st.lists(st.tuples(st.text(max_size=5) | JSON, RESULT_LIKE), max_size=3), JSON)
def test_result_items_of_any_shape(items, worker):
    read_all({"worker": worker if isinstance(worker, dict) else {"id": "w"}, "items": [list(i) for i in items]})


def read_all(fields: dict) -> None:
    for reader in (wire.task_of, wire.results_of, wire.release_of):
        try:
            value = reader(fields)
        except WireError:
            continue
        if reader is wire.results_of:
            for lease, result in value:
                assert isinstance(lease, str) and isinstance(result, Result)
                json.dumps(result.to_record(), ensure_ascii=False)  # the journal and manifest can take it


@given(st.binary(max_size=500))
def test_any_bytes_from_redis_are_a_message_or_a_wire_error(data):
    for reader in READERS:
        try:
            reader(data)
        except WireError:
            pass


@given(message_like())
def test_json_shaped_nearly_like_ours(fields):
    raw = json.dumps(fields).encode()
    try:
        kind, message = wire.load(raw)
    except WireError:
        return
    read_all(message)


@given(JSON)
def test_any_json_value(value):
    raw = json.dumps(value).encode()
    for reader in (wire.load, wire.worker_of, wire.rules_of):
        try:
            reader(raw)
        except WireError:
            pass
    if isinstance(value, dict):
        read_all(value)


@given(st.builds(FetchTask, url=st.text(min_size=1, max_size=40), name=st.text(max_size=20),
                 index=st.integers(min_value=0, max_value=2**40), attempt=st.integers(min_value=1, max_value=99),
                 checksum=st.none() | st.text(max_size=10),
                 meta=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
                 provisional_name=st.booleans(),
                 headers=st.none() | st.lists(st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)),
                                              min_size=1, max_size=3).map(tuple)))
def test_a_task_round_trips_through_redis(task):
    kind, message = wire.load(wire.dump_task(task).encode("utf-8", "surrogatepass"))
    assert kind == "task"
    back = wire.task_of(message)
    assert (back.url, back.name, back.index, back.attempt, back.checksum, back.meta, back.headers) == \
        (task.url, task.name, task.index, task.attempt, task.checksum, task.meta, task.headers)


@given(st.builds(Result, url=st.text(max_size=30), status=st.sampled_from(list(Status)),
                 path=st.none() | st.text(max_size=20), bytes=st.integers(min_value=0, max_value=2**50),
                 http_status=st.none() | st.integers(min_value=100, max_value=599),
                 error=st.none() | st.builds(ErrorInfo, st.text(max_size=10), st.text(max_size=30)),
                 attempts=st.integers(min_value=0, max_value=50), elapsed_s=st.floats(min_value=0, max_value=1e6),
                 index=st.integers(min_value=0, max_value=2**40), retryable=st.booleans()),
       st.text(max_size=20))
def test_results_round_trip_through_redis(result, lease):
    kind, message = wire.load(wire.dump_results(INFO, [(lease, result)]))
    [(back_lease, back)] = wire.results_of(message)
    assert back_lease == lease and back.url == result.url and back.status == result.status
    assert back.error == result.error and back.bytes == result.bytes and back.index == result.index


CALL_ARGS = st.lists(st.one_of(JSON, st.builds(Result, url=st.one_of(st.text(max_size=10), st.integers()),
                                                           status=st.sampled_from(list(Status))),
                               st.just(INFO), st.tuples(st.integers(), st.text(max_size=5))), max_size=4)


@given(st.one_of(st.sampled_from(["hello", "lease", "heartbeat", "complete", "adopt", "release", "stats",
                                  "__init__", "offer"]), st.text(max_size=10)),
       CALL_ARGS)
def test_any_call_to_the_manager_is_checked_or_refused(method, args):
    try:
        checked_method, checked_args = check_call((method, tuple(args)))
    except WireError:
        return
    assert checked_method == method


@given(st.binary(max_size=300))
def test_any_bytes_on_the_managers_wire_are_a_call_or_a_refusal(data):
    server = RpcServer.__new__(RpcServer)  # the dispatch only: no socket needed for a message's bytes
    server._methods = {"stats": lambda gone_too=False: {"ok": True}}
    server._check = check_call
    from fetcher.distributed.dropped import Dropped
    import logging

    server.dropped = Dropped(logging.getLogger("fetcher.test.wire"), "test")
    kind, _value = pickle.loads(server._dispatch(data))
    assert kind in ("ok", "error")


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner), max_leaves=10))
def test_any_pickled_object_on_the_managers_wire(value):
    test_any_bytes_on_the_managers_wire_are_a_call_or_a_refusal.hypothesis.inner_test(  # type: ignore[attr-defined]
        pickle.dumps(value))


def test_found_task_headers_that_are_not_pairs_are_a_wire_error():
    """``len(p)`` ran before the type check: a header entry of null (or a number) raised TypeError."""
    for headers in ([None], [5], [["a"]], [["a", 1]], "x"):
        try:
            wire.task_of({"task": {"url": "http://h/", "name": "n", "headers": headers}})
        except WireError:
            continue
        raise AssertionError(f"headers {headers!r} were taken")
