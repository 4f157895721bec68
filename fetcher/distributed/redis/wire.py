"""The Redis broker's messages: versioned JSON, never pickle.

Every message is one JSON object with ``"v"`` (the wire version) and
``"kind"``. Decoding checks both and every field's type; anything else raises
``WireError``, which the reader logs and drops: a malformed or foreign entry
never crashes ``serve`` or a worker.

    task     {"v", "kind": "task", "task": {...}}                                   tasks stream
    results  {"v", "kind": "results", "worker": {...}, "items": [[lease, {...}], ...]}   results stream
    release  {"v", "kind": "release", "worker": {...}, "lease", "leaving"}            results stream
    shard    {"v", "kind": "shard", "worker": {...}, "reports": [...]}               results stream
    order    {"v", "kind": "order", "order": {...}}                                   mail:ID list

A results entry carries a batch (one XADD per complete() call, up to
``RESULTS_PER_ENTRY``): per-entry costs, in redis-py and in Redis, dominate
per-URL ones otherwise.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fetcher.distributed.calls import WireError as WireError  # re-exported: readers catch wire.WireError
from fetcher.distributed.calls import check_order, check_reports
from fetcher.distributed.protocol import RunRules, WorkerInfo
from fetcher.models import ErrorInfo, Result, Status
from fetcher.models import FetchTask as Task

VERSION = 1
MAX_MESSAGE = 8 << 20
RESULTS_PER_ENTRY = 500
# The fields a results message carries when not at their default (url, status, index, error aside).
_DEFAULTS = tuple((f.name, {} if f.name == "extra" else f.default) for f in dataclasses.fields(Result)
                  if f.name not in ("url", "status", "index", "error", "content", "meta"))
# json's own string encoder (what json.dumps uses with ensure_ascii), for dump_task's template.
_quote = json.encoder.encode_basestring_ascii
_NONE = type(None)
# The plain fields of a result's JSON body and the types JSON may give them (wire._item).
_BODY_TYPES: dict[str, tuple[type, ...]] = {
    "url": (str,), "path": (str, _NONE), "bytes": (int,), "sha256": (str, _NONE), "http_status": (int, _NONE),
    "content_type": (str, _NONE), "final_url": (str, _NONE), "attempts": (int,), "elapsed_s": (int, float),
    "index": (int,), "retryable": (bool,), "retry_after": (int, float, _NONE), "after_head_s": (int, float, _NONE),
    "staged": (int,)}
_STATUS = {status.value: status for status in Status}


_WORKER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "capacity": int, "pool": int, "held": int, "done": int, "dropped": int, "told": bool, "at": (int, float),
    "host": str, "out": str, "backend": str, "pid": int}


def _dump(kind: str, body: dict[str, Any]) -> str:
    return json.dumps({"v": VERSION, "kind": kind, **body}, separators=(",", ":"))


def text_of(value: object, limit: int = MAX_MESSAGE) -> str:
    """The text of a value read from the broker: bytes checked (size, strict UTF-8) before decoding.

    Redis hands back whatever anyone wrote; decoding inside the client (redis-py's
    ``decode_responses``) raises UnicodeDecodeError from its parser, past every
    check of ours. So every value arrives as bytes and is decoded here, once.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, (bytes, bytearray)) or len(value) > limit:
        raise WireError("not a text message, or too large")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("not UTF-8") from None


def load(text: object) -> tuple[str, dict[str, Any]]:
    """``(kind, message)`` of a JSON message; WireError if it is not one of ours."""
    decoded = text_of(text)
    try:
        message = json.loads(decoded)
    except (ValueError, RecursionError):
        raise WireError("not JSON") from None
    if not isinstance(message, dict) or message.get("v") != VERSION or not isinstance(message.get("kind"), str):
        raise WireError(f"not a fetcher message of wire version {VERSION}")
    return message["kind"], message


def _typed(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
        raise WireError(f"{what} has the wrong type")
    return value


# -- tasks -------------------------------------------------------------------------------


def dump_task(task: Task) -> str:
    """A task's message; a plain task (no meta, no headers: every task of a URL list) by a template,
    four times cheaper than the encoder and byte for byte what it writes (tests/test_wire_fast.py)."""
    if task.meta is not None or task.headers:
        return _dump_task(task)
    checksum = "null" if task.checksum is None else _quote(task.checksum)
    addresses = "[" + ",".join(map(_quote, task.addresses)) + "]" if task.addresses else "null"
    return (f'{{"v":{VERSION},"kind":"task","task":{{"url":{_quote(task.url)},"name":{_quote(task.name)},'
            f'"index":{int(task.index)},"attempt":{int(task.attempt)},"checksum":{checksum},"meta":null,'
            f'"provisional":{"true" if task.provisional_name else "false"},"headers":null,"addresses":{addresses}}}}}')


def _dump_task(task: Task) -> str:
    return _dump("task", {"task": {"url": task.url, "name": task.name, "index": task.index,
                                   "attempt": task.attempt, "checksum": task.checksum, "meta": task.meta,
                                   "provisional": task.provisional_name,
                                   "headers": [list(pair) for pair in task.headers or ()] or None,
                                   "addresses": list(task.addresses) if task.addresses else None}})


def task_of(fields: dict[str, Any]) -> Task:
    body = _typed(fields.get("task"), dict, "task")
    headers = body.get("headers")
    if headers is not None:
        _typed(headers, list, "headers")
        if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in headers):
            raise WireError("a header is not a [name, value] pair of strings")
        headers = tuple((p[0], p[1]) for p in headers)
    meta = body.get("meta")
    addresses = body.get("addresses")
    if addresses is not None:
        addresses = tuple(str(a) for a in _typed(addresses, list, "addresses"))
    return Task(url=_typed(body.get("url"), str, "url"), name=_typed(body.get("name"), str, "name"),
                index=_typed(body.get("index", 0), int, "index"), attempt=_typed(body.get("attempt", 1), int, "attempt"),
                checksum=_typed(body.get("checksum"), (str, type(None)), "checksum"),
                meta=_typed(meta, (dict, type(None)), "meta"), provisional_name=bool(body.get("provisional")),
                headers=headers, addresses=addresses or None)


# -- results -----------------------------------------------------------------------------


def _result_body(result: Result) -> dict[str, Any]:
    # A field at its default is left out (the reader's default is the same): half the bytes to
    # write, send and decode for a typical result. url, status and index always go.
    body: dict[str, Any] = {"url": result.url, "status": result.status.value, "index": result.index}
    for name, default in _DEFAULTS:
        value = getattr(result, name)
        if value is not default and (type(value) is not type(default) or value != default):
            body[name] = value
    if result.error is not None:
        body["error"] = [result.error.kind, result.error.message]
    return body


def dump_results(worker: WorkerInfo, items: list[tuple[str, Result]]) -> str:
    return _dump("results", {"worker": worker.label, "items": [[lease, _result_body(r)] for lease, r in items]})


def results_of(fields: dict[str, Any]) -> list[tuple[str, Result]]:
    """``(lease id, Result)`` pairs of a results message; each Result's ``extra`` names the worker."""
    label = _label(fields)
    items = _typed(fields.get("items"), list, "items")
    return [_item(item, label) for item in items]


def _item(item: Any, label: dict[str, str]) -> tuple[str, Result]:
    # Checked here, field by field, as JSON decodes them (exact types: a bool is no int), and the
    # Result built once: the per-result path of ``serve`` over Redis (issue 29), so no second pass
    # through calls.check_result. Keys not of a Result are ignored; a missing url is refused.
    if type(item) is not list or len(item) != 2 or type(item[1]) is not dict:
        raise WireError("a result item has the wrong shape")
    lease, body = item
    if type(lease) is not str:
        raise WireError("lease has the wrong type")
    status = body.get("status")
    status = _STATUS.get(status) if type(status) is str else None
    if status is None:
        raise WireError("unknown status")
    error = body.get("error")
    if error is not None:
        if type(error) is not list or len(error) != 2 or type(error[0]) is not str or type(error[1]) is not str:
            raise WireError("error has the wrong shape")
        error = ErrorInfo(error[0], error[1])
    extra = body.get("extra")
    if extra is None:
        extra = {"worker": label}
    elif type(extra) is dict:
        extra = {**extra, "worker": label}
    else:
        raise WireError("extra has the wrong type")
    fields = {}
    for name, value in body.items():
        kinds = _BODY_TYPES.get(name)
        if kinds is not None:
            if type(value) not in kinds:
                raise WireError(f"a result whose {name} has the wrong type")
            fields[name] = value
    if "url" not in fields:
        raise WireError("result fields missing")
    return lease, Result(status=status, error=error, extra=extra, **fields)


def _label(fields: dict[str, Any]) -> dict[str, str]:
    worker = _typed(fields.get("worker"), dict, "worker")
    return {key: str(worker.get(key, "?")) for key in ("id", "host", "out")}


def dump_release(worker: WorkerInfo, lease: str, leaving: bool) -> str:
    return _dump("release", {"worker": worker.label, "lease": lease, "leaving": leaving})


def release_of(fields: dict[str, Any]) -> tuple[dict[str, str], str, bool]:
    return _label(fields), _typed(fields.get("lease"), str, "lease"), bool(fields.get("leaving"))


# -- webdataset shards (calls.py says what orders and reports hold) -------------------


def dump_order(order: dict[str, Any]) -> str:
    # default=str: an input column pyarrow read as bytes or a date is text in the row, as in KEY.json
    return json.dumps({"v": VERSION, "kind": "order", "order": order}, separators=(",", ":"), default=str)


def order_of(fields: dict[str, Any]) -> dict[str, Any]:
    return check_order(fields.get("order"))


def dump_reports(worker: WorkerInfo, reports: list[dict[str, Any]]) -> str:
    return _dump("shard", {"worker": worker.label, "reports": reports})


def reports_of(fields: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """``(worker id, reports)`` of a shard message from a worker."""
    return _label(fields)["id"], check_reports(fields.get("reports"))


# -- run description ---------------------------------------------------------------------


def dump_rules(rules: RunRules) -> str:
    return json.dumps({"options": rules.options, "cookies_text": rules.cookies_text}, separators=(",", ":"))


def rules_of(text: object) -> RunRules:
    """The run's RunRules as ``serve`` stored them (the worker checks the options themselves:
    ``Options.from_worker_form``)."""
    try:
        fields = json.loads(text_of(text))
    except (ValueError, RecursionError):  # a WireError (not UTF-8) is a ValueError too
        fields = None
    if not isinstance(fields, dict) or not isinstance(fields.get("options"), dict):
        raise WireError("the run's options cannot be read")
    cookies = fields.get("cookies_text")
    if cookies is not None and not isinstance(cookies, str):
        raise WireError("the run's options cannot be read")
    return RunRules(fields["options"], cookies)


def dump_worker(info: WorkerInfo, extra: dict[str, Any]) -> str:
    return json.dumps({**dataclasses.asdict(info), **extra}, separators=(",", ":"))


def worker_row(worker: dict[str, Any], now: float) -> dict[str, Any]:
    """A worker's description as ``stats()`` lists it (``at``: the wall clock of its last call)."""
    at = worker.get("at")
    seen = round(max(0.0, now - at), 1) if isinstance(at, (int, float)) else 0
    return {"id": worker["id"], "host": worker.get("host", "?"), "pid": worker.get("pid", 0),
            "out": worker.get("out", "?"), "backend": worker.get("backend", "?"), "pool": worker.get("pool", 0),
            "held": worker.get("held", 0), "done": worker.get("done", 0), "seen_s_ago": seen}


def worker_of(text: object) -> dict[str, Any]:
    """A worker's description as it keeps it in Redis; WireError if it is not one."""
    try:
        value = json.loads(text_of(text, 1 << 16))
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        raise WireError("not a worker description")
    for name, kind in _WORKER_FIELDS.items():  # serve adds and compares these: a wrong type would crash it
        if name in value and (not isinstance(value[name], kind) or isinstance(value[name], bool) and kind is int):
            raise WireError(f"a worker description whose {name} has the wrong type")
    return value
