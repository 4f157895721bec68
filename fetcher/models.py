"""Plain, frozen data that crosses every boundary: threads, processes, sockets.

Nothing here holds a response, a session or an exception object, so every value
pickles cheaply and compares by value. Errors travel as a kind plus a message.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """Final state of one URL in the manifest."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class ErrorKind(str, enum.Enum):
    """Why a URL failed; the ``kind`` field of a manifest error."""

    INVALID_URL = "invalid-url"
    UNSUPPORTED_SCHEME = "unsupported-scheme"
    CONNECT = "connect"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http-status"
    TRUNCATED = "truncated"
    TOO_LARGE = "too-large"
    BAD_CONTENT = "bad-content"
    REDIRECT = "redirect"
    IO = "io"
    CANCELLED = "cancelled"
    WORKER_DIED = "worker-died"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as data: a stable ``kind`` for machines, a ``message`` for people."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Task:
    """One URL to download.

    Attributes:
        url: the canonical http(s) URL.
        name: the file's path relative to the output folder (already made safe).
        index: position of the URL in the input (0-based), for ordering and naming.
        attempt: 1 for the first try, incremented by the scheduler on each retry.
    """

    url: str
    name: str
    index: int = 0
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one attempt at one Task (or of a line that never became one).

    ``retryable`` tells the scheduler the failure is transient; whether to try
    again is the scheduler's decision, never the worker's. ``retry_after`` carries
    a server's Retry-After hint in seconds when it gave one.
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

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED

    def to_record(self) -> dict[str, Any]:
        """The manifest's JSON object for this result (documented in README.md)."""
        record = asdict(self)
        record["status"] = self.status.value
        record["elapsed_s"] = round(self.elapsed_s, 4)
        for internal in ("index", "retryable", "retry_after", "extra"):
            del record[internal]
        record.update(self.extra)
        return record


def failed(task_or_url: Task | str, kind: ErrorKind, message: str, **fields: Any) -> Result:
    """Build a failed Result for a task (or a bare input line)."""
    if isinstance(task_or_url, Task):
        fields.setdefault("attempts", task_or_url.attempt)
        fields.setdefault("index", task_or_url.index)
        url = task_or_url.url
    else:
        url = task_or_url
    return Result(url=url, status=Status.FAILED, error=ErrorInfo(kind.value, message), **fields)
