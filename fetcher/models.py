"""Plain, frozen data that crosses every boundary: threads, processes, sockets.

Nothing here holds a response, a session or an exception object, so every value
pickles cheaply and compares by value. Errors travel as a kind plus a message.
"""

from __future__ import annotations

import builtins
import enum
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from fetcher.redact import mask, mask_extra, mask_optional


class Status(str, enum.Enum):
    """Final state of one URL in the manifest."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class ErrorKind(str, enum.Enum):
    """Why a URL failed; the ``kind`` field of a manifest error."""

    INVALID_URL = "invalid-url"
    INVALID_INPUT = "invalid-input"  # a row of a CSV/TSV/JSONL input that cannot become a task
    UNSUPPORTED_SCHEME = "unsupported-scheme"
    CONNECT = "connect"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http-status"
    TRUNCATED = "truncated"
    TOO_LARGE = "too-large"
    TOO_SMALL = "too-small"
    BAD_CONTENT = "bad-content"
    REDIRECT = "redirect"
    IO = "io"
    STORAGE = "storage"  # the output's disk is full or read-only: a local run stops (errors.StorageError)
    CANCELLED = "cancelled"
    WORKER_DIED = "worker-died"
    # image datasets (images.py, optout.py): never retried
    BAD_IMAGE = "bad-image"
    IMAGE_TOO_SMALL = "image-too-small"
    IMAGE_TOO_LARGE = "image-too-large"
    BAD_ASPECT_RATIO = "bad-aspect-ratio"
    OPTED_OUT = "opted-out"
    DNS = "dns"  # the run's resolver found no address for the host (run/dns.py): its URLs fail without a request
    ROBOTS = "robots"  # --robots: robots.txt disallows the URL, or could not be had (5xx, unreachable)
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as data: a stable ``kind`` for machines, a ``message`` for people."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class FetchTask:
    """One URL to download, as the run knows it: canonical, named, numbered (internal).

    The public ``fetcher.Task`` (api.py) is what a caller asks for; ``sources.tasks.TaskMaker``
    turns it, like every input line, into one of these.

    Attributes:
        url: the canonical http(s) URL.
        name: the file's path relative to the output folder (already made safe).
        index: position of the URL in the input (0-based), for ordering and naming.
        attempt: 1 for the first try, incremented by the scheduler on each retry.
        checksum: expected digest of the body as ``"sha256:HEX"`` or ``"md5:HEX"``;
            a mismatch fails the download.
        meta: extra input columns, carried unchanged into the manifest record
            (under its ``"input"`` key, see ``input_extra``).
        provisional_name: the name waits for the response headers: its extension
            comes from Content-Type (the URL has none), or with ``--naming
            content-disposition`` its stem comes from the server. fetch_one asks
            ``naming.finalize_name`` for the final name; the ``.part`` file
            keeps ``name`` so it can be found before any request.
        headers: extra request headers for this URL only (Python API).
        addresses: the host's addresses as the run's resolver found them (run/dns.py),
            so no worker asks DNS again; None: the worker's client resolves the name.
    """

    url: str
    name: str
    index: int = 0
    attempt: int = 1
    checksum: str | None = None
    meta: dict[str, Any] | None = None
    provisional_name: bool = False
    headers: tuple[tuple[str, str], ...] | None = None
    addresses: tuple[str, ...] | None = None  # the last field: run/dns.py rebuilds a task with it, by position

    def __reduce__(self) -> tuple[Any, ...]:
        # Positional fields via a C attrgetter: 3x cheaper than the generated
        # __getstate__/__setstate__ of a slots dataclass, for tasks that cross
        # processes and hosts by the thousand.
        return FetchTask, _task_fields(self)


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one attempt at one FetchTask (or of a line that never became one).

    The fields of the manifest record (see README.md) plus:

    - ``retryable``: the failure is transient; whether to try again is the
      scheduler's decision, never the worker's. ``retry_after`` carries a
      server's Retry-After hint in seconds when it gave one.
    - ``content``: the body, in in-memory mode (Python API ``memory=True``).
    - ``meta``: the ``meta`` of the Python API's Task (``fetcher.Task``), handed back unchanged.
    - ``ok``: True unless the status is ``failed``.
    - ``staged``: 0, or (``--durability batch``) the body is whole in the task's
      ``.part`` and gets its final name ``path`` from the coordinator's flush
      (durability.py): 1, or 2 when a ``.part.meta`` is to be removed too.
    - ``after_head_s``: seconds from the response's head to the end of the attempt, as the
      worker measured them (None: no response came). The scheduler counts a host's ``--delay``
      or Crawl-delay from that head, the latest moment the server surely saw the request,
      whatever the clocks and queues between it and the worker (run/hosts.py).

    ``index``, ``retryable``, ``retry_after``, ``content``, ``meta``, ``staged`` and
    ``after_head_s`` are not written to the manifest.
    """

    url: str
    status: Status
    path: str | None = None
    bytes: int = 0
    sha256: str | None = None
    http_status: int | None = None
    content_type: str | None = None
    final_url: str | None = None
    error: ErrorInfo | None = None
    attempts: int = 1
    elapsed_s: float = 0.0
    index: int = 0
    retryable: bool = False
    retry_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    content: builtins.bytes | None = None  # builtins: the field `bytes` shadows the type here
    meta: Any = None
    after_head_s: float | None = None
    staged: int = 0  # the last field: run/flusher.py rebuilds a Result without it, by position

    def __reduce__(self) -> tuple[Any, ...]:
        return Result, _result_fields(self)  # see FetchTask.__reduce__

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED

    def to_record(self) -> dict[str, Any]:
        """The manifest's JSON object for this result (documented in README.md)."""
        # Built by hand: dataclasses.asdict deep-copies and was a quarter of the
        # coordinator's time per URL.
        # Credentials never reach a record: every text that may hold a URL goes through redact.mask.
        error = self.error
        record = {
            "url": mask(self.url), "status": self.status.value, "path": self.path, "bytes": self.bytes,
            "sha256": self.sha256, "http_status": self.http_status, "content_type": self.content_type,
            "final_url": mask_optional(self.final_url),
            "error": None if error is None else {"kind": error.kind, "message": mask(error.message)},
            "attempts": self.attempts, "elapsed_s": round(self.elapsed_s, 4),
        }
        if self.extra:
            record.update(mask_extra(self.extra))
        return record


# What a run's input yields, item by item: a task to fetch; a Result already final (an input
# line that cannot become a task: a rejected line, reported as data); or None, the one signal
# for "nothing right now, ask again after the next result" (a crawl waiting for its own pages).
Item = FetchTask | Result | None

_task_fields = attrgetter(*(f.name for f in fields(FetchTask)))
_result_fields = attrgetter(*(f.name for f in fields(Result)))


def input_extra(meta: dict[str, Any] | None) -> dict[str, Any]:
    """``Result.extra`` for a task's extra input columns.

    They are nested under one ``"input"`` key, so a column called ``status`` or
    ``path`` can never clobber the manifest's own fields.
    """
    return {"input": dict(meta)} if meta else {}


def failed(task_or_url: FetchTask | str, kind: ErrorKind, message: str, **fields: Any) -> Result:
    """Build a failed Result for a task (or a bare input line)."""
    if isinstance(task_or_url, FetchTask):
        fields.setdefault("attempts", task_or_url.attempt)
        fields.setdefault("index", task_or_url.index)
        fields.setdefault("extra", input_extra(task_or_url.meta))
        url = task_or_url.url
    else:
        url = task_or_url
    return Result(url=url, status=Status.FAILED, error=ErrorInfo(kind.value, message), **fields)
