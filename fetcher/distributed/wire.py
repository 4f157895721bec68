"""The Redis broker's messages: versioned JSON, never pickle.

Every message is one JSON object with ``"v"`` (the wire version) and
``"kind"``. Decoding checks both and every field's type; anything else raises
``WireError``, which the reader logs and drops: a malformed or foreign entry
never crashes ``serve`` or a worker.

    task     {"v", "kind": "task", "task": {...}}                       tasks stream
    result   {"v", "kind": "result", "worker": {...}, "lease", "result": {...}}   results stream
    release  {"v", "kind": "release", "worker": {...}, "lease", "url", "leaving"}  results stream
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fetcher.distributed.protocol import WorkerInfo
from fetcher.models import ErrorInfo, Result, Status, Task
from fetcher.options import Options

VERSION = 1
MAX_MESSAGE = 1 << 20


class WireError(ValueError):
    """A message that is not one of ours (or not of this version)."""


def _dump(kind: str, body: dict[str, Any]) -> str:
    return json.dumps({"v": VERSION, "kind": kind, **body}, separators=(",", ":"))


def load(text: object) -> tuple[str, dict[str, Any]]:
    """``(kind, message)`` of a JSON message; WireError if it is not one of ours."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        raise WireError("not a text message, or too large")
    try:
        message = json.loads(text)
    except ValueError:
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
    return _dump("task", {"task": {"url": task.url, "name": task.name, "index": task.index,
                                   "attempt": task.attempt, "checksum": task.checksum, "meta": task.meta,
                                   "provisional": task.provisional_name,
                                   "headers": [list(pair) for pair in task.headers or ()] or None}})


def task_of(fields: dict[str, Any]) -> Task:
    body = _typed(fields.get("task"), dict, "task")
    headers = body.get("headers")
    if headers is not None:
        _typed(headers, list, "headers")
        headers = tuple((str(_typed(p, list, "header")[0]), str(p[1])) for p in headers if len(p) == 2)
    meta = body.get("meta")
    return Task(url=_typed(body.get("url"), str, "url"), name=_typed(body.get("name"), str, "name"),
                index=_typed(body.get("index", 0), int, "index"), attempt=_typed(body.get("attempt", 1), int, "attempt"),
                checksum=_typed(body.get("checksum"), (str, type(None)), "checksum"),
                meta=_typed(meta, (dict, type(None)), "meta"), provisional_name=bool(body.get("provisional")),
                headers=headers)


# -- results -----------------------------------------------------------------------------


def _result_body(result: Result) -> dict[str, Any]:
    body = {f.name: getattr(result, f.name) for f in dataclasses.fields(Result)
            if f.name not in ("content", "meta", "status", "error")}
    body["status"] = result.status.value
    body["error"] = None if result.error is None else [result.error.kind, result.error.message]
    return body


def dump_result(worker: WorkerInfo, lease: str, result: Result) -> str:
    return _dump("result", {"worker": worker.label, "lease": lease, "result": _result_body(result)})


def result_of(fields: dict[str, Any]) -> tuple[dict[str, str], str, Result]:
    """``(worker label, lease id, Result)`` of a result message."""
    body = dict(_typed(fields.get("result"), dict, "result"))
    try:
        status = Status(body.pop("status", None))
    except ValueError:
        raise WireError("unknown status") from None
    error = body.pop("error", None)
    if error is not None:
        _typed(error, list, "error")
        if len(error) != 2 or not all(isinstance(part, str) for part in error):
            raise WireError("error has the wrong shape")
        error = ErrorInfo(error[0], error[1])
    known = {f.name for f in dataclasses.fields(Result)} - {"content", "meta", "status", "error"}
    extra = _typed(body.get("extra", {}), dict, "extra")
    try:
        result = Result(status=status, error=error, **{k: v for k, v in body.items() if k in known and k != "extra"},
                        extra=extra)
    except TypeError:
        raise WireError("result fields missing") from None
    _typed(result.url, str, "url")
    return _label(fields), _typed(fields.get("lease"), str, "lease"), result


def _label(fields: dict[str, Any]) -> dict[str, str]:
    worker = _typed(fields.get("worker"), dict, "worker")
    return {key: str(worker.get(key, "?")) for key in ("id", "host", "out")}


def dump_release(worker: WorkerInfo, lease: str, leaving: bool) -> str:
    return _dump("release", {"worker": worker.label, "lease": lease, "leaving": leaving})


def release_of(fields: dict[str, Any]) -> tuple[dict[str, str], str, bool]:
    return _label(fields), _typed(fields.get("lease"), str, "lease"), bool(fields.get("leaving"))


# -- run description ---------------------------------------------------------------------


def dump_options(options: Options) -> str:
    return json.dumps(dataclasses.asdict(options), separators=(",", ":"))


def options_of(text: str) -> Options:
    """The run's Options as ``serve`` stored them (tuples come back from lists)."""
    try:
        fields = json.loads(text)
        known = {f.name for f in dataclasses.fields(Options)}
        values = {k: v for k, v in fields.items() if k in known}
        values["accept"] = tuple(values.get("accept", ()))
        values["headers"] = tuple((str(a), str(b)) for a, b in values.get("headers", ()))
        return Options(**values)
    except (ValueError, TypeError, AttributeError):
        raise WireError("the run's options cannot be read") from None


def dump_worker(info: WorkerInfo, extra: dict[str, Any]) -> str:
    return json.dumps({**dataclasses.asdict(info), **extra}, separators=(",", ":"))


def worker_of(text: object) -> dict[str, Any]:
    """A worker's description as it keeps it in Redis; WireError if it is not one."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        raise WireError("not a worker description")
    return value
