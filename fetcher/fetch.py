"""``fetch_one``: one attempt at one URL, always returning a Result.

Every backend runs this same function. It streams the body to ``NAME.part``,
hashes it on the way, checks it arrived whole, and only then renames it to its
final name, so a file under a final name is always complete. Whatever goes
wrong with the URL (network, status, content, disk) comes back as a failed
Result with an error kind; only bugs raise.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import requests

from fetcher import placement
from fetcher.checksum import Verifier
from fetcher.models import ErrorKind, Result, Status, Task, failed, input_extra
from fetcher.naming import PART_SUFFIX, finalize_name, join_within

if TYPE_CHECKING:
    from fetcher.options import Options

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class CancelFlag(Protocol):
    """Anything with ``is_set()``: threading.Event, multiprocessing.Event, gevent Event."""

    def is_set(self) -> bool: ...


class _Cancelled(Exception):
    pass


class _Failure(Exception):
    """Internal: carries a failure out of nested helpers to the one place that builds Results."""

    def __init__(self, kind: ErrorKind, message: str, retryable: bool = False,
                 http_status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(kind, message)
        self.kind, self.message, self.retryable = kind, message, retryable
        self.http_status, self.retry_after = http_status, retry_after


def fetch_one(task: Task, session: requests.Session, options: Options,
              cancel: CancelFlag | None = None) -> Result:
    """Download ``task.url`` to ``options.out / task.name`` and describe the outcome.

    Args:
        task: what to fetch and where to put it (relative, already made safe).
        session: the caller's session; fetch_one never makes one.
        options: timeouts, chunk size, output folder.
        cancel: checked between chunks; when set, the download stops, its
            ``.part`` file is removed and a ``cancelled`` Result returned.

    Returns:
        A Result; failures carry an error kind and ``retryable`` for transient ones.
    """
    started = time.monotonic()
    try:
        target = join_within(options.out, task.name)
    except ValueError as exc:
        return failed(task, ErrorKind.INVALID_URL, str(exc))
    if not task.provisional_name:  # --on-exists skip: no request when the final name is known
        kept = placement.kept_file(task, task.name, options.out, options.on_exists, attempts=0)
        if kept is not None:
            return kept
    part = target + PART_SUFFIX
    try:
        with _translate_errors():
            return _download(task, session, options, target, part, cancel, started)
    except _Failure as failure:
        _remove_quietly(part)
        return failed(task, failure.kind, failure.message, retryable=failure.retryable,
                      http_status=failure.http_status, retry_after=failure.retry_after,
                      elapsed_s=time.monotonic() - started)
    except _Cancelled:
        _remove_quietly(part)
        return failed(task, ErrorKind.CANCELLED, "cancelled before the download finished",
                      elapsed_s=time.monotonic() - started)
    except BaseException:
        _remove_quietly(part)
        raise


def _download(task: Task, session: requests.Session, options: Options, target: str, part: str,
              cancel: CancelFlag | None, started: float) -> Result:
    timeout = (options.connect_timeout, options.read_timeout)
    with session.get(task.url, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status >= 400:
            raise _Failure(ErrorKind.HTTP_STATUS, f"HTTP {status} {response.reason or ''}".strip(),
                           retryable=status in TRANSIENT_STATUSES, http_status=status,
                           retry_after=parse_retry_after(response.headers.get("Retry-After")))
        name = _final_name(task, response, options)
        if name != task.name:  # the name came from the headers: --on-exists can decide only now
            kept = placement.kept_file(task, name, options.out, options.on_exists, task.attempt)
            if kept is not None:
                return kept
        verifier = Verifier(task.checksum)
        size, sha256 = _stream_to_file(response, part, options.chunk_size, cancel, verifier)
        _check_complete(response, size)
        if (mismatch := verifier.mismatch(sha256)) is not None:
            raise _Failure(ErrorKind.BAD_CONTENT, mismatch, http_status=status)
        landed = placement.place(part, options.out, name, options.on_exists)
        if landed is None:  # --on-exists skip, and the name was taken while this one downloaded
            return placement.taken_meanwhile(task, name, options.out)
        return Result(url=task.url, status=Status.OK, path=landed, bytes=size, sha256=sha256,
                      http_status=status, content_type=response.headers.get("Content-Type"),
                      final_url=response.url, attempts=task.attempt, index=task.index,
                      elapsed_s=time.monotonic() - started, extra=input_extra(task.meta))


def _final_name(task: Task, response: requests.Response, options: Options) -> str:
    """The naming hook: a provisional name is completed from the response headers."""
    name = finalize_name(task, response.headers.get("Content-Type"),
                         response.headers.get("Content-Disposition"), options.naming)
    try:
        join_within(options.out, name)
    except ValueError as exc:  # cannot happen with names from naming.py; never trust it blindly
        raise _Failure(ErrorKind.INVALID_URL, str(exc)) from None
    return name


def _stream_to_file(response: requests.Response, part: str, chunk_size: int,
                    cancel: CancelFlag | None, verifier: Verifier) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    os.makedirs(os.path.dirname(part), exist_ok=True)
    with open(part, "wb") as handle:
        for chunk in response.iter_content(chunk_size):
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            handle.write(chunk)
            digest.update(chunk)
            verifier.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _check_complete(response: requests.Response, decoded_size: int) -> None:
    """A body shorter than its Content-Length is a failure, never a saved file.

    urllib3 already enforces Content-Length on the raw stream; this second check
    covers identity bodies whatever the urllib3 version does.
    """
    declared = response.headers.get("Content-Length")
    if declared is None or response.headers.get("Content-Encoding", "identity") != "identity":
        return
    try:
        expected = int(declared)
    except ValueError:
        return
    if decoded_size < expected:
        raise _Failure(ErrorKind.TRUNCATED, f"body ended after {decoded_size} of {expected} bytes",
                       retryable=True, http_status=response.status_code)


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Map requests/urllib3/OS errors to (kind, retryable) in one place."""
    exc_module = requests.exceptions
    try:
        yield
    except exc_module.Timeout as exc:
        raise _Failure(ErrorKind.TIMEOUT, _short(exc), retryable=True) from None
    except exc_module.SSLError as exc:
        raise _Failure(ErrorKind.CONNECT, f"TLS error: {_short(exc)}") from None
    except exc_module.ConnectionError as exc:
        raise _Failure(ErrorKind.CONNECT, _short(exc), retryable=True) from None
    except exc_module.ChunkedEncodingError as exc:
        raise _Failure(ErrorKind.TRUNCATED, f"body ended early: {_short(exc)}", retryable=True) from None
    except exc_module.ContentDecodingError as exc:
        raise _Failure(ErrorKind.BAD_CONTENT, f"cannot decode body: {_short(exc)}") from None
    except exc_module.TooManyRedirects as exc:
        raise _Failure(ErrorKind.REDIRECT, _short(exc)) from None
    except (exc_module.InvalidSchema, exc_module.MissingSchema) as exc:
        raise _Failure(ErrorKind.REDIRECT, f"redirected to an unsupported URL: {_short(exc)}") from None
    except (exc_module.InvalidURL, exc_module.InvalidHeader, UnicodeError) as exc:
        raise _Failure(ErrorKind.INVALID_URL, _short(exc)) from None
    except OSError as exc:
        raise _Failure(ErrorKind.IO, f"cannot write file: {exc.strerror or exc}") from None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
