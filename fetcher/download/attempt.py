"""``fetch_one``: one attempt at one URL, always returning a Result.

Every backend runs this same function, over either transport (see
transports/base.py). A ``Download`` is what the transport streams into: it
decides on the response head (status, Retry-After, Content-Type, the final
name, ``--on-exists``, resume, declared size), then takes the body chunk by
chunk (cancel, deadlines, size cap on decoded bytes, magic bytes, hashes) into
``NAME.part``, checks it arrived whole, and only then gives it its final name,
so a file under a final name is always complete (and, with ``--durability``,
flushed to the disk in the order durability.py keeps). Whatever goes wrong with the
URL (network, status, content, disk) comes back as a failed Result with an
error kind; only bugs raise.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fetcher.download import durability, images, partial, placement, ratelimit
from fetcher.errors import STORAGE_ERRNOS, FetchFailure
from fetcher.download.checksum import Verifier, hash_prefix
from fetcher.download.headers import expected_size, parse_retry_after, resume_offset
from fetcher.download.optout import opted_out
from fetcher.models import ErrorKind, Result, Status, FetchTask, failed, input_extra
from fetcher.files.naming import finalize_name
from fetcher.files.paths import FOUND, NO_FOLDER, PART_SUFFIX, join_within, locate, prune_empty
from fetcher.download.guards import (MAGIC_BYTES, CancelFlag, Cancelled, TransferGuard, check_complete, check_content_type,
                                  check_encoding, check_magic, is_encoded)
from fetcher.transports import as_transport
from fetcher.transports.base import Head, Request

if TYPE_CHECKING:
    from fetcher.options import Options

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# A download expected to be at least this large writes its resume meta when it starts, so that
# even a killed run can resume it; smaller ones write it only if they fail transiently.
EAGER_META_BYTES = 1 << 20
# An error response's body up to this size is read and dropped, so its keep-alive connection
# serves the next URL instead of being closed: a list with many 404s costs the server one
# connection, not one per 404 (and, over TLS, one handshake each). A bigger body is cut off.
DRAIN_BYTES = 64 * 1024


def fetch_one(task: FetchTask, session: Any, options: Options, cancel: CancelFlag | None = None) -> Result:
    """Download ``task.url`` to ``options.output.out / task.name`` and describe the outcome.

    Args:
        task: what to fetch and where to put it (relative, already made safe).
        session: what ``transports.factory.make_session`` returned for this worker (a
            transport), or a caller's own ``requests.Session``; fetch_one never makes one.
        options: timeouts, size caps, checks, output folder.
        cancel: checked between chunks; when set, the download stops and a
            ``cancelled`` Result is returned.

    Returns:
        A Result; failures carry an error kind and ``retryable`` for transient ones.
        A failure leaves no file, except a resumable ``.part`` (see partial.py)
        when the failure is transient or the download was cancelled.
    """
    download = prepare(task, options, cancel)
    if isinstance(download, Result):
        return download
    transport = as_transport(session)
    return download.settle(transport.fetch, download.request(), download)


def prepare(task: FetchTask, options: Options, cancel: CancelFlag | None = None) -> Download | Result:
    """The checks before any request: a Download to perform, or already a Result."""
    started = time.monotonic()
    try:
        target, presence = locate(options.output.out, task.name)
    except ValueError as exc:
        return failed(task, ErrorKind.INVALID_URL, str(exc))
    # --on-exists skip: no request when the name is known and taken (the safety walk saw if it is free).
    if presence == FOUND and not task.provisional_name and not options.output.in_memory:
        output = options.output
        kept = placement.kept_file(task, task.name, output.out, output.on_exists, attempts=0, target=target)
        if kept is not None:
            return kept
    return Download(task, options, cancel, started, target, may_resume=presence != NO_FOLDER)


class _Kept(Exception):
    """The final name, known from the headers, is taken and ``--on-exists skip`` keeps it."""

    def __init__(self, result: Result) -> None:
        super().__init__(result)
        self.result = result


class Download:
    """One attempt at one task: the receiver a transport streams into, and the Result it makes."""

    def __init__(self, task: FetchTask, options: Options, cancel: CancelFlag | None, started: float,
                 target: str, may_resume: bool = True) -> None:
        self.task, self.options, self.cancel, self.started = task, options, cancel, started
        self.target = target  # join_within(out, name), kept in step with self.name
        self.part = target + PART_SUFFIX  # the provisional name's, so a resume finds it before any request
        self.guard = TransferGuard(options.rules.read_timeout, options.rules.max_time, options.rules.min_speed,
                                   options.rules.min_speed_time, options.memory_cap, started)
        self.resume: tuple[int, str] | None = None
        self.has_meta = False  # NAME.part.meta exists (from an earlier attempt, or written by this one)
        if may_resume and not options.output.in_memory:  # False: the part's folder does not exist yet
            self.resume, self.has_meta = partial.read_meta(self.part, task.url, task.attempt)
        self.head: Head | None = None
        self.head_at = 0.0  # monotonic time on_head was called
        self.guard.limit = ratelimit.for_options(options)
        self.name = task.name
        self.sink: partial.PartFile | io.BytesIO | None = None
        self.offset = 0
        self.sniffed: bytes | None = None  # the body's first bytes while --accept still has to check them
        self.digest = hashlib.sha256()
        self.verifier = Verifier(task.checksum)
        self.rejected: FetchFailure | None = None  # the response's status failed: its body is drained
        self.drained = 0
        self.images = options.dataset.wants_images

    def request(self) -> Request:
        options = self.options
        headers = dict(self.task.headers) if self.task.headers else {}
        if self.resume is not None:
            headers.update({"Range": f"bytes={self.resume[0]}-", "If-Range": self.resume[1],
                            "Accept-Encoding": "identity"})
        rules = options.rules
        connect = min(rules.connect_timeout, rules.max_time) if rules.max_time else rules.connect_timeout
        return Request(self.task.url, headers, connect, self.guard, options.transport.chunk_size, self.task.addresses)

    def settle(self, transfer: Callable[..., Head], *args: object) -> Result:
        """The Result of this attempt, ``transfer(*args)`` being the transport's transfer: a blocking
        ``fetch``, or the ``finish`` of one a multi handle ran (``CurlTransport.finish(code, message)``).

        Every failure of this URL becomes a Result; only bugs raise.
        """
        try:
            try:
                return self._finish(transfer(*args))
            finally:
                if self.sink is not None:
                    self.sink.close()
        except _Kept as kept:
            partial.discard(self.part)
            return kept.result
        except FetchFailure as failure:
            # A status already refused is the reason, whatever then befell its drained body.
            return self._failed(self.rejected or failure)
        except Cancelled:
            return self._failed(None)
        except OSError as exc:
            return self._failed(_write_failure(exc))
        except BaseException:
            partial.discard(self.part)
            raise

    # -- the receiver: head, then body ------------------------------------------------

    def on_head(self, head: Head) -> None:
        """Refuse a response whose status or headers fail a rule; else open the sink."""
        self.head, self.head_at = head, time.monotonic()
        status, headers = head.status, head.headers
        if status == 416 and self.resume is not None:
            partial.discard(self.part)  # the part no longer fits the file: start over on the retry
            self._reject(FetchFailure(ErrorKind.HTTP_STATUS, "HTTP 416 for a resumed download; restarting",
                                      retryable=True))
            return
        if status < 200:  # http.client takes a 1xx other than 100 (a 103) for the final response
            raise FetchFailure(ErrorKind.HTTP_STATUS, f"HTTP {status}: an informational response where the "
                               "final one was expected", retryable=True)
        if status >= 400:
            self._reject(FetchFailure(ErrorKind.HTTP_STATUS, f"HTTP {status} {head.reason}".strip(),
                                      retryable=status in TRANSIENT_STATUSES,
                                      retry_after=parse_retry_after(headers.get("Retry-After"))))
            return
        user_agent = self.options.politeness.user_agent
        if not self.options.dataset.ignore_opt_out and (directive := opted_out(headers, user_agent)):
            self._reject(FetchFailure(ErrorKind.OPTED_OUT, f"X-Robots-Tag: {directive}: the server opts this file "
                                      "out of AI training (--ignore-opt-out fetches it anyway)"))
            return
        check_content_type(headers.get("Content-Type"), self.options.rules.accept)
        check_encoding(headers)
        if self.options.output.in_memory or (self.resume is None and images.sample_fits_in_memory(
                self.options, headers.get("Content-Length"), is_encoded(headers))):
            self.guard.check_declared_size(headers.get("Content-Length"), is_encoded(headers))
            self.sink = io.BytesIO()
        else:
            self._open_part(head)
        if self.options.rules.accept and self.offset == 0:
            self.sniffed = b""

    def write(self, chunk: bytes) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        limit = self.guard.limit
        if limit is not None:
            limit.take(len(chunk))  # --limit-rate: sleeps while the run is ahead of its cap
        if self.rejected is not None:
            self.drained += len(chunk)
            if self.drained > DRAIN_BYTES:
                raise self.rejected  # too much to drain: give the connection up instead
            return
        self.guard.account(len(chunk))
        if self.sniffed is not None:
            self.sniffed += chunk
            if len(self.sniffed) >= MAGIC_BYTES:
                check_magic(self.head.headers.get("Content-Type"), self.sniffed)  # type: ignore[union-attr]
                self.sniffed = None
        self.sink.write(chunk)  # type: ignore[union-attr]
        self.digest.update(chunk)
        self.verifier.update(chunk)

    # -- steps -----------------------------------------------------------------------

    def _reject(self, failure: FetchFailure) -> None:
        """Fail this response; drain its body first if it is small enough (see DRAIN_BYTES)."""
        declared = self.head.headers.get("Content-Length") if self.head is not None else None
        if declared is not None and (not (declared.isascii() and declared.isdigit()) or int(declared) > DRAIN_BYTES):
            raise failure
        self.rejected = failure

    def _open_part(self, head: Head) -> None:
        """Name the file, apply --on-exists, and open ``NAME.part`` (resuming it on a matching 206)."""
        task, options, headers = self.task, self.options, head.headers
        self.name = self._final_name(head)
        if self.name != task.name:  # the name came from the headers: --on-exists can decide only now
            kept = placement.kept_file(task, self.name, options.output.out, options.output.on_exists, task.attempt,
                                       target=self.target)
            if kept is not None:
                raise _Kept(kept)
        self.offset = resume_offset(head.status, headers, self.resume)
        self.guard.check_declared_size(headers.get("Content-Length"), is_encoded(headers), self.offset)
        if self.offset:
            self.digest = hash_prefix(self.part, self.offset, self.verifier)
            self.guard.account(self.offset)
        elif self.has_meta:  # a part this response does not continue
            partial.discard(self.part)
            self.has_meta = False
        self.sink = partial.open_part(self.part, self.offset)
        if self.offset == 0 and expected_size(headers, EAGER_META_BYTES) >= EAGER_META_BYTES:
            self.has_meta = partial.remember(self.part, task.url, headers)

    def _final_name(self, head: Head) -> str:
        """The naming hook: a provisional name is completed from the response headers."""
        name = finalize_name(self.task, head.headers.get("Content-Type"),
                             head.headers.get("Content-Disposition"), self.options.output.naming)
        if name != self.task.name:
            try:
                self.target = join_within(self.options.output.out, name)
            except ValueError as exc:  # cannot happen with names from naming.py; never trust it blindly
                raise FetchFailure(ErrorKind.INVALID_URL, str(exc)) from None
        return name

    def _finish(self, head: Head) -> Result:
        """Every check of a complete body, then the file under its final name."""
        if self.rejected is not None:
            raise self.rejected
        guard, status = self.guard, head.status
        if self.sniffed is not None:
            check_magic(head.headers.get("Content-Type"), self.sniffed)
        check_complete(head.headers, status, guard.size - self.offset)
        if guard.size < self.options.rules.min_size:
            raise FetchFailure(ErrorKind.TOO_SMALL, f"body of {guard.size} bytes is under --min-size "
                               f"{self.options.rules.min_size}")
        sha256 = self.digest.hexdigest()
        if (mismatch := self.verifier.mismatch(sha256)) is not None:
            raise FetchFailure(ErrorKind.BAD_CONTENT, mismatch)
        size = guard.size
        image: dict[str, Any] = {}
        if self.images:
            image, size, sha256 = self._image_step(size, sha256)
        fields: dict[str, Any] = {}
        if isinstance(self.sink, io.BytesIO):  # in-memory mode, or a webdataset sample (_image_step)
            fields["content"] = self.sink.getvalue()
        elif durability.stages(self.options):  # the coordinator's flush names it (durability.py)
            self.sink.close()  # type: ignore[union-attr]
            fields["path"], fields["staged"] = self.name, 2 if self.has_meta else 1
        else:
            sink = self.sink
            assert isinstance(sink, partial.PartFile)
            sink.close(sync=durability.syncs_each_file(self.options))
            output = self.options.output
            landed = placement.place(self.part, output.out, self.name, output.on_exists, self.target)
            if self.has_meta:
                partial.discard_meta(self.part)
            if landed is None:  # --on-exists skip, and the name was taken while this one downloaded
                return placement.taken_meanwhile(self.task, self.name, self.options.output.out)
            durability.after_rename(self.options, self.target)
            fields["path"] = landed
        task = self.task
        return Result(url=task.url, status=Status.OK, bytes=size, sha256=sha256, http_status=status,
                      content_type=head.headers.get("Content-Type"), final_url=head.url, attempts=task.attempt,
                      index=task.index, elapsed_s=time.monotonic() - self.started, after_head_s=self._after_head(),
                      extra={**input_extra(task.meta), **image} if image else input_extra(task.meta), **fields)

    def _image_step(self, size: int, sha256: str) -> tuple[dict[str, Any], int, str]:
        """Decode, check and maybe re-encode the image (images.py): its manifest fields, and the stored size and hash.

        Runs here, in the worker that downloaded it, so the process backend decodes on every core.
        """
        if isinstance(self.sink, io.BytesIO):
            source: str | bytes = self.sink.getvalue()
        else:
            self.sink.close()  # type: ignore[union-attr]  # flushed, so that Pillow reads it all
            source = self.part
        outcome = images.finish_image(source, self.options)
        # The sink is closed already, so its close(sync=...) below does nothing: the .part is synced here.
        sync = not self.options.output.in_memory and durability.syncs_each_file(self.options)
        if outcome.data is None:
            if sync:
                durability.sync_file(self.part)
            return outcome.fields, size, sha256
        fields = {**outcome.fields, "original_bytes": size, "original_sha256": sha256}
        if self.options.output.in_memory or self.options.shards_here:
            # The re-encoded image is in memory already and its one place is the shard: it goes to the
            # coordinator in the Result, not through a staged file written, synced, renamed, read back
            # and removed: each image reaches the disk once, in its shard (issue 26).
            if not isinstance(self.sink, io.BytesIO):
                partial.discard(self.part)
                self.has_meta = False
            self.sink = io.BytesIO(outcome.data)
        else:
            with open(self.part, "wb") as handle:  # the stored image replaces the download in its .part
                handle.write(outcome.data)
                if sync:
                    handle.flush()
                    durability.sync_data(handle.fileno())
            # The .part keeps its name: a staging flush (durability.py) finds it by the task's name.
            self.name = images.with_extension(self.name, outcome.ext or "jpg")
            self.target = join_within(self.options.output.out, self.name)
        stored, digest = images.stored_fields(outcome.data)
        return fields, stored, digest

    def _failed(self, failure: FetchFailure | None) -> Result:
        """Clean up after a failure (None: cancelled), keeping a part the retry that will come can resume
        (a cancelled run's too: the next run resumes it)."""
        # A full disk stops the run (run/engine.py): its .part stays for the next run, retry or not.
        keep = (failure is None or failure.kind is ErrorKind.STORAGE
                or self.options.rules.will_retry(self.task.attempt, failure.retryable))
        if not (keep and self._keep_for_resume()):
            partial.discard(self.part)
            # Its folder may be new, and now empty. Not on a cancel: every download in flight
            # ends at once then, and the next run needs the folders anyway.
            if failure is not None and self.sink is not None and not isinstance(self.sink, io.BytesIO):
                prune_empty(os.path.dirname(self.part), self.options.output.out)
        task, elapsed = self.task, time.monotonic() - self.started
        if failure is None:
            return failed(task, ErrorKind.CANCELLED, "cancelled before the download finished", elapsed_s=elapsed)
        head = self.head
        status = failure.http_status if failure.http_status is not None else getattr(head, "status", None)
        # What the server said stays on the record (a 200 whose body was refused is still a 200 of
        # that type, from that URL); the .part's path is fetcher's own business, never in a message.
        message = failure.message.replace(self.part, "the downloaded file") if self.part else failure.message
        return failed(task, failure.kind, message, retryable=failure.retryable, http_status=status,
                      retry_after=failure.retry_after, elapsed_s=elapsed,
                      content_type=head.headers.get("Content-Type") if head is not None else None,
                      final_url=head.url if head is not None else None, after_head_s=self._after_head())

    def _after_head(self) -> float | None:
        """Seconds since the response's head arrived (Result.after_head_s); None if none did."""
        return None if self.head is None else time.monotonic() - self.head_at

    def _keep_for_resume(self) -> bool:
        """Whether the ``.part`` can be resumed by a later attempt (writing its meta if it was not yet)."""
        if isinstance(self.sink, io.BytesIO):
            return False
        if self.has_meta:
            return partial.is_resumable(self.part)
        if self.sink is None or self.guard.size == 0:  # this attempt wrote nothing worth keeping
            return False
        return partial.remember(self.part, self.task.url, self.head.headers)  # type: ignore[union-attr]


def _write_failure(exc: OSError) -> FetchFailure:
    """A file that could not be written: ``storage`` when the whole disk refuses (full, read-only),
    which stops a local run (run/engine.py); else ``io``, a problem of this one file."""
    if exc.errno in STORAGE_ERRNOS:
        return FetchFailure(ErrorKind.STORAGE, f"cannot write file: {exc.strerror or exc}", retryable=True)
    return FetchFailure(ErrorKind.IO, f"cannot write file: {exc.strerror or exc}")
