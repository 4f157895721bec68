"""The shapes of what crosses a broker, checked before anything of ours touches it.

The manager broker unpickles calls (only after the authkey handshake), the Redis
broker decodes JSON (wire.py): either way a value of the wrong type (a Result
whose ``url`` is a number, a lease id that is a list) would surface later, deep
in the engine, the journal or the manifest, and stop the run. ``check_call``
and ``check_result`` raise WireError instead; the reader drops the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fetcher.distributed.protocol import WorkerInfo
from fetcher.models import ErrorInfo, Result, Status
from fetcher.run.shard_rows import row_problem

_NONE = type(None)
_RESULT_TYPES: dict[str, type | tuple[type, ...]] = {
    "url": str, "status": Status, "path": (str, _NONE), "bytes": int, "sha256": (str, _NONE),
    "http_status": (int, _NONE), "content_type": (str, _NONE), "final_url": (str, _NONE),
    "error": (ErrorInfo, _NONE), "attempts": int, "elapsed_s": (int, float), "index": int, "retryable": bool,
    "retry_after": (int, float, _NONE), "after_head_s": (int, float, _NONE), "extra": dict, "staged": int}


class WireError(ValueError):
    """A message that is not one of ours (or not of this version)."""


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # True is an int to isinstance, never to us
        return False
    return isinstance(value, kinds)


# _RESULT_TYPES as (name, kinds, whether a bool is one of them): check_result runs once per result.
_RESULT_CHECKS = tuple((name, kind if isinstance(kind, tuple) else (kind,),
                        bool in (kind if isinstance(kind, tuple) else (kind,))) for name, kind in _RESULT_TYPES.items())


def check_result(result: object) -> Result:
    """``result`` if it is a Result whose every field has its declared type; else WireError."""
    if not isinstance(result, Result):
        raise WireError("not a Result")
    for name, kinds, bool_ok in _RESULT_CHECKS:
        value = getattr(result, name)
        if not isinstance(value, kinds) or (not bool_ok and isinstance(value, bool)):
            raise WireError(f"a result whose {name} has the wrong type")
    error = result.error
    if error is not None and not (isinstance(error.kind, str) and isinstance(error.message, str)):
        raise WireError("a result whose error has the wrong type")
    return result


def _lease_ids(value: Any) -> None:
    if not isinstance(value, list) or not all(_is(lease, (int, str)) for lease in value):
        raise WireError("lease ids must be a list of ids")


def _pairs(value: Any, second: Callable[[Any], object]) -> None:
    if not isinstance(value, list):
        raise WireError("a list of pairs was expected")
    for pair in value:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not _is(pair[0], (int, str)):
            raise WireError("a pair has the wrong shape")
        second(pair[1])


def _text(value: Any) -> None:
    if not isinstance(value, str):
        raise WireError("text was expected")


def _worker_info(value: Any) -> None:
    if not isinstance(value, WorkerInfo) or not all(isinstance(getattr(value, f), str) for f in
                                                    ("id", "host", "out", "backend")):
        raise WireError("not a worker's description")
    if not all(_is(getattr(value, f), int) for f in ("pid", "pool", "capacity")):
        raise WireError("a worker's description with the wrong types")


def _int(value: Any) -> None:
    if not _is(value, int):
        raise WireError("a number was expected")


def _seen(value: Any) -> None:
    if not _is(value, int) or not 0 <= value < 1 << 64:
        raise WireError("the last shard order seen is not a number")


def _bool(value: Any) -> None:
    if not isinstance(value, bool):
        raise WireError("true or false was expected")


# Each method's positional arguments, checked one by one (a trailing None: optional).
_CALLS: dict[str, tuple[Callable[[Any], object], ...]] = {
    "hello": (_int, _text, _worker_info),
    "lease": (_text, _int),
    "heartbeat": (_text, _lease_ids),
    "complete": (_text, lambda items: _pairs(items, check_result)),
    "adopt": (_text, lambda holding: _pairs(holding, _text)),
    "release": (_text, _lease_ids, _bool),
    "stats": (_bool,),
    "exchange": (_text, lambda reports: check_reports(reports), _seen),
}
_REQUIRED = {"release": 2, "stats": 0}


def check_call(call: object) -> tuple[str, tuple[Any, ...]]:
    """``(method, args)`` of a call to the manager broker, each argument of its type; else WireError."""
    if not isinstance(call, tuple) or len(call) != 2 or not isinstance(call[0], str) or not isinstance(call[1], tuple):
        raise WireError("not a (method, args) call")
    method, args = call
    checks = _CALLS.get(method)
    if checks is None:
        raise WireError(f"{method[:40]!r} is not a method of the broker")
    if not _REQUIRED.get(method, len(checks)) <= len(args) <= len(checks):
        raise WireError(f"{method} takes {len(checks)} arguments, not {len(args)}")
    for check, value in zip(checks, args):
        check(value)
    return method, args


# -- webdataset shards ---------------------------------------------------------------------
# The shard messages between ``serve`` and its workers (webdataset across hosts), checked on arrival.
#
# They are plain dicts with an ``op``, the same on both brokers (the manager pickles
# them, Redis carries them as JSON: ``redis/wire.py``). ``serve`` decides what a
# shard holds and whether it counts; a worker writes it in its own folder.
#
# Orders, serve -> worker (its mailbox; fetched by ``exchange``)::
#
#     rows    {"shard", "token", "rows": [{"key", "path" (staged image or None), "row" (img2dataset's)}]}
#     seal    {"shard", "token", "count"}      the shard holds these ``count`` rows: write it as .part
#     commit  {"shard", "token"}               serve recorded it: rename it into place
#     abort   {"shard", "token"}               serve gave up on it (done again elsewhere): delete it
#
# Reports, worker -> serve (sent with ``exchange``)::
#
#     written    {"shard", "token", "count", "failed": {key: error message}}   the .part files are whole
#     committed  {"shard", "token"}                                         renamed into place
#     broken     {"shard", "token", "why"}                                  cannot write it: give it to others
#     ask        {"shard", "host", "out"}   whole .part files found at start: commit them if serve did
#
# Every order carries ``seq``: the broker numbers a serve's orders from ``first_seq(epoch)`` up. The worker
# carries out each seq once and says the last one it carried out (``seen``) on its next ``exchange``; the
# manager broker keeps a worker's orders until they are seen, so a reply lost on the way, or a caller that
# is not the worker reading its mailbox, loses none (the Redis broker empties the mailbox as it reads it).
#
# ``token`` names one assignment of a shard id to one worker: a late report under
# another token (a worker serve gave up on, coming back) is refused with ``abort``.
# Anything else is a WireError: the reader drops and logs it, never crashes.

MAX_ROWS = 100_000
_TEXT_LIMIT = 4096
_ORDERS = ("rows", "seal", "commit", "abort")
_REPORTS = ("written", "committed", "broken", "ask")


def _field_int(message: dict[str, Any], name: str) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 10 ** 12:
        raise WireError(f"a shard message whose {name} is not a number")
    return value


def _field_seq(message: dict[str, Any]) -> int:
    value = message.get("seq")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 1 << 64:
        raise WireError("a shard order whose seq is not a number")
    return value


def _field_text(message: dict[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or len(value) > _TEXT_LIMIT:
        raise WireError(f"a shard message whose {name} is not text")
    return value


def _op(message: object, allowed: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    if not isinstance(message, dict) or message.get("op") not in allowed:
        raise WireError(f"not a shard message ({', '.join(allowed)})")
    return message, str(message["op"])


def _row(item: object) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("row"), dict):
        raise WireError("a shard row has the wrong shape")
    problem = row_problem(item["row"])
    if problem is not None:
        raise WireError(f"a shard row with {problem}")
    _field_text(item, "key")
    if not item["key"].isdigit() or not item["key"].isascii():
        raise WireError("a shard row's key is not digits")
    path = item.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("staging/") or ".." in path
                             or "\x00" in path or len(path) > _TEXT_LIMIT):
        raise WireError("a shard row's staged path is not under staging/")


def first_seq(epoch: int) -> int:
    """The number of a serve's first shard order: the epoch (random per start) in the high bits, so a
    worker's ``seen`` from an earlier serve never hides a new serve's orders."""
    return (epoch << 32) + 1


def seen_before(seq: int, seen: int) -> bool:
    """True if the order numbered ``seq`` was carried out already by a worker that last saw ``seen``."""
    return seq >> 32 == seen >> 32 and seq <= seen


def check_order(message: object) -> dict[str, Any]:
    """``message`` if it is an order of ours, every field of its type; else WireError."""
    checked, op = _op(message, _ORDERS)
    _field_seq(checked)
    _field_int(checked, "shard")
    _field_text(checked, "token")
    if op == "rows":
        rows = checked.get("rows")
        if not isinstance(rows, list) or len(rows) > MAX_ROWS:
            raise WireError("a rows order without a list of rows")
        for item in rows:
            _row(item)
    elif op == "seal":
        _field_int(checked, "count")
    return checked


def check_report(message: object) -> dict[str, Any]:
    """``message`` if it is a report of ours, every field of its type; else WireError."""
    checked, op = _op(message, _REPORTS)
    _field_int(checked, "shard")
    if op == "ask":
        _field_text(checked, "host")
        _field_text(checked, "out")
        return checked
    _field_text(checked, "token")
    if op == "written":
        _field_int(checked, "count")
        failed = checked.get("failed", {})
        if not isinstance(failed, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in failed.items()):
            raise WireError("a written report whose failed rows are not key: message")
    elif op == "broken":
        _field_text(checked, "why")
    return checked


def check_reports(reports: object) -> list[dict[str, Any]]:
    """A list of reports (one ``exchange``): every one checked; WireError for the first bad one."""
    if not isinstance(reports, list) or len(reports) > MAX_ROWS:
        raise WireError("reports must be a list")
    return [check_report(report) for report in reports]
