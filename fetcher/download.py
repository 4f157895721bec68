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
import io
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

import requests
import urllib3.exceptions

from fetcher import partial, placement
from fetcher.checksum import Verifier
from fetcher.guards import FetchFailure, TransferGuard, check_content_type
from fetcher.models import ErrorKind, Result, Status, Task, failed, input_extra
from fetcher.naming import PART_SUFFIX, finalize_name, join_within
from fetcher.streaming import CancelFlag, Cancelled, check_complete, hash_prefix, is_encoded, stream_body

if TYPE_CHECKING:
    from fetcher.options import Options

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def fetch_one(task: Task, session: requests.Session, options: Options,
              cancel: CancelFlag | None = None) -> Result:
    """Download ``task.url`` to ``options.out / task.name`` and describe the outcome.

    Args:
        task: what to fetch and where to put it (relative, already made safe).
        session: the caller's session; fetch_one never makes one.
        options: timeouts, size caps, checks, output folder.
        cancel: checked between reads; when set, the download stops and a
            ``cancelled`` Result is returned.

    Returns:
        A Result; failures carry an error kind and ``retryable`` for transient ones.
        A failure leaves no file, except a resumable ``.part`` (see partial.py)
        when the failure is transient or the download was cancelled.
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
    part = target + PART_SUFFIX  # named after the provisional name, so a resume finds it before any request
    try:
        with _translate_errors():
            return _download(task, session, options, part, cancel, started)
    except FetchFailure as failure:
        if not (failure.retryable and partial.is_resumable(part)):
            partial.discard(part)
        return failed(task, failure.kind, failure.message, retryable=failure.retryable,
                      http_status=failure.http_status, retry_after=failure.retry_after,
                      elapsed_s=time.monotonic() - started)
    except Cancelled:
        if not partial.is_resumable(part):
            partial.discard(part)
        return failed(task, ErrorKind.CANCELLED, "cancelled before the download finished",
                      elapsed_s=time.monotonic() - started)
    except BaseException:
        partial.discard(part)
        raise


def _download(task: Task, session: requests.Session, options: Options, part: str,
              cancel: CancelFlag | None, started: float) -> Result:
    guard = TransferGuard(options.read_timeout, options.max_time, options.min_speed, options.min_speed_time,
                          options.memory_cap, started)
    connect = options.connect_timeout if not options.max_time else min(options.connect_timeout, options.max_time)
    resume = None if options.in_memory else partial.resume_point(part, task.url)
    request_headers = dict(task.headers or ())
    if resume is not None:
        request_headers.update({"Range": f"bytes={resume[0]}-", "If-Range": resume[1],
                                "Accept-Encoding": "identity"})
    with session.get(task.url, stream=True, timeout=(connect, options.read_timeout),
                     headers=request_headers) as response:
        status = response.status_code
        headers = response.headers
        if status == 416 and resume is not None:
            partial.discard(part)  # the part no longer fits the file: start over on the retry
            raise FetchFailure(ErrorKind.HTTP_STATUS, "HTTP 416 for a resumed download; restarting",
                               retryable=True, http_status=status)
        if status >= 400:
            raise FetchFailure(ErrorKind.HTTP_STATUS, f"HTTP {status} {response.reason or ''}".strip(),
                               retryable=status in TRANSIENT_STATUSES, http_status=status,
                               retry_after=parse_retry_after(headers.get("Retry-After")))
        check_content_type(headers.get("Content-Type"), options.accept)
        if options.in_memory:
            return _into_memory(task, response, guard, options, cancel, started)
        return _into_file(task, response, part, resume, guard, options, cancel, started)


def _into_memory(task: Task, response: requests.Response, guard: TransferGuard, options: Options,
                 cancel: CancelFlag | None, started: float) -> Result:
    """In-memory mode: the body comes back in ``Result.content``; nothing touches the disk."""
    headers = response.headers
    guard.check_declared_size(headers.get("Content-Length"), is_encoded(headers))
    body, digest, verifier = io.BytesIO(), hashlib.sha256(), Verifier(task.checksum)
    sha256 = _receive(response, body, digest, guard, options, cancel, verifier)
    return Result(url=task.url, status=Status.OK, bytes=guard.size, sha256=sha256,
                  http_status=response.status_code, content_type=headers.get("Content-Type"),
                  final_url=response.url, attempts=task.attempt, index=task.index,
                  elapsed_s=time.monotonic() - started, extra=input_extra(task.meta), content=body.getvalue())


def _into_file(task: Task, response: requests.Response, part: str, resume: tuple[int, str] | None,
               guard: TransferGuard, options: Options, cancel: CancelFlag | None, started: float) -> Result:
    """Stream to ``NAME.part`` (resuming it on a matching 206), verify, then place it under its final name."""
    headers = response.headers
    name = _final_name(task, response, options)
    if name != task.name:  # the name came from the headers: --on-exists can decide only now
        kept = placement.kept_file(task, name, options.out, options.on_exists, task.attempt)
        if kept is not None:
            return kept
    offset = _resume_offset(response.status_code, headers, resume)
    guard.check_declared_size(headers.get("Content-Length"), is_encoded(headers), offset)
    os.makedirs(os.path.dirname(part), exist_ok=True)
    if offset == 0:
        partial.discard(part)
        partial.remember(part, task.url, headers)
    verifier = Verifier(task.checksum)
    digest = hash_prefix(part, offset, verifier)
    guard.account(offset)
    with open(part, "r+b" if offset else "wb") as handle:
        handle.seek(offset)
        handle.truncate()
        sha256 = _receive(response, handle, digest, guard, options, cancel, verifier, offset)
    landed = placement.place(part, options.out, name, options.on_exists)
    partial.discard(part)  # the meta file (and the part, if skip found the name taken meanwhile)
    if landed is None:  # --on-exists skip, and the name was taken while this one downloaded
        return placement.taken_meanwhile(task, name, options.out)
    return Result(url=task.url, status=Status.OK, path=landed, bytes=guard.size, sha256=sha256,
                  http_status=response.status_code, content_type=headers.get("Content-Type"),
                  final_url=response.url, attempts=task.attempt, index=task.index,
                  elapsed_s=time.monotonic() - started, extra=input_extra(task.meta))


def _receive(response: requests.Response, sink: IO[bytes], digest: hashlib._Hash, guard: TransferGuard,
             options: Options, cancel: CancelFlag | None, verifier: Verifier, offset: int = 0) -> str:
    """Stream the body into ``sink`` and run every check of a complete body; return its SHA-256."""
    status = response.status_code
    sniff = response.headers.get("Content-Type") if options.accept and offset == 0 else None
    try:
        stream_body(response, sink, digest, guard, options.chunk_size, options.read_timeout, sniff, cancel,
                    verifier)
    except FetchFailure as failure:
        failure.http_status = status
        raise
    check_complete(response, guard.size - offset)
    if guard.size < options.min_size:
        raise FetchFailure(ErrorKind.TOO_SMALL, f"body of {guard.size} bytes is under --min-size "
                           f"{options.min_size}", http_status=status)
    sha256 = digest.hexdigest()
    if (mismatch := verifier.mismatch(sha256)) is not None:
        raise FetchFailure(ErrorKind.BAD_CONTENT, mismatch, http_status=status)
    return sha256


def _final_name(task: Task, response: requests.Response, options: Options) -> str:
    """The naming hook: a provisional name is completed from the response headers."""
    name = finalize_name(task, response.headers.get("Content-Type"),
                         response.headers.get("Content-Disposition"), options.naming)
    try:
        join_within(options.out, name)
    except ValueError as exc:  # cannot happen with names from naming.py; never trust it blindly
        raise FetchFailure(ErrorKind.INVALID_URL, str(exc)) from None
    return name


def _resume_offset(status: int, headers: Mapping[str, str], resume: tuple[int, str] | None) -> int:
    """Where the body starts in the file: the part's size for a matching 206, else 0.

    A 200 to a ranged request means the server ignored the range or the file
    changed (If-Range failed): the body is the whole new file.
    """
    if status != 206:
        return 0
    start = _content_range_start(headers.get("Content-Range", ""))
    if resume is None or start != resume[0]:
        raise FetchFailure(ErrorKind.BAD_CONTENT, f"unexpected partial response (Content-Range "
                           f"{headers.get('Content-Range')!r})", retryable=True, http_status=status)
    return start


def _content_range_start(value: str) -> int | None:
    unit, _, rest = value.strip().partition(" ")
    first = rest.split("-", 1)[0]
    return int(first) if unit.lower() == "bytes" and first.isdigit() else None


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Map requests/urllib3/OS errors to (kind, retryable) in one place."""
    exc_module = requests.exceptions
    try:
        yield
    except exc_module.Timeout as exc:
        raise FetchFailure(ErrorKind.TIMEOUT, _short(exc), retryable=True) from None
    except exc_module.SSLError as exc:
        raise FetchFailure(ErrorKind.CONNECT, f"TLS error: {_short(exc)}") from None
    except exc_module.ConnectionError as exc:
        raise FetchFailure(ErrorKind.CONNECT, _short(exc), retryable=True) from None
    except exc_module.ChunkedEncodingError as exc:
        raise FetchFailure(ErrorKind.TRUNCATED, f"body ended early: {_short(exc)}", retryable=True) from None
    except exc_module.ContentDecodingError as exc:
        raise FetchFailure(ErrorKind.BAD_CONTENT, f"cannot decode body: {_short(exc)}") from None
    except exc_module.TooManyRedirects as exc:
        raise FetchFailure(ErrorKind.REDIRECT, _redirect_message(exc)) from None
    except (exc_module.InvalidSchema, exc_module.MissingSchema) as exc:
        raise FetchFailure(ErrorKind.REDIRECT, f"redirected to an unsupported URL: {_short(exc)}") from None
    except (exc_module.InvalidURL, exc_module.InvalidHeader, UnicodeError) as exc:
        raise FetchFailure(ErrorKind.INVALID_URL, _short(exc)) from None
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise FetchFailure(ErrorKind.TIMEOUT, _short(exc), retryable=True) from None
    except urllib3.exceptions.DecodeError as exc:
        raise FetchFailure(ErrorKind.BAD_CONTENT, f"cannot decode body: {_short(exc)}") from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead) as exc:
        raise FetchFailure(ErrorKind.TRUNCATED, f"body ended early: {_short(exc)}", retryable=True) from None
    except urllib3.exceptions.SSLError as exc:
        raise FetchFailure(ErrorKind.CONNECT, f"TLS error: {_short(exc)}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise FetchFailure(ErrorKind.CONNECT, _short(exc), retryable=True) from None
    except OSError as exc:
        raise FetchFailure(ErrorKind.IO, f"cannot write file: {exc.strerror or exc}") from None


def _redirect_message(exc: requests.TooManyRedirects) -> str:
    response = exc.response
    if response is not None:
        chain = [r.url for r in response.history] + [response.url]
        if len(set(chain)) < len(chain):
            return f"redirect loop: {' -> '.join(chain[-4:])}"
    return _short(exc)


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
