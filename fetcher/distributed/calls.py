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

_NONE = type(None)
_RESULT_TYPES: dict[str, type | tuple[type, ...]] = {
    "url": str, "status": Status, "path": (str, _NONE), "bytes": int, "sha256": (str, _NONE),
    "http_status": (int, _NONE), "content_type": (str, _NONE), "final_url": (str, _NONE),
    "error": (ErrorInfo, _NONE), "attempts": int, "elapsed_s": (int, float), "index": int, "retryable": bool,
    "retry_after": (int, float, _NONE), "extra": dict, "staged": int}


class WireError(ValueError):
    """A message that is not one of ours (or not of this version)."""


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # True is an int to isinstance, never to us
        return False
    return isinstance(value, kinds)


def check_result(result: object) -> Result:
    """``result`` if it is a Result whose every field has its declared type; else WireError."""
    if not isinstance(result, Result):
        raise WireError("not a Result")
    for name, kind in _RESULT_TYPES.items():
        if not _is(getattr(result, name), kind):
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
