"""What ``fetch_one`` reads from a response's headers: declared size, resume offset, Retry-After."""

from __future__ import annotations

import time
from typing import Any

from fetcher.errors import FetchFailure
from fetcher.models import ErrorKind


def expected_size(headers: Any, unknown: int) -> int:
    """The declared body size; ``unknown`` when it is not declared (or not a number)."""
    try:
        return int(headers.get("Content-Length"))
    except (TypeError, ValueError):
        return unknown


def resume_offset(status: int, headers: Any, resume: tuple[int, str] | None) -> int:
    """Where the body starts in the file: the part's size for a matching 206, else 0.

    A 200 to a ranged request means the server ignored the range or the file
    changed (If-Range failed): the body is the whole new file.
    """
    if status != 206:
        return 0
    start = _content_range_start(headers.get("Content-Range", ""))
    if resume is None or start != resume[0]:
        raise FetchFailure(ErrorKind.BAD_CONTENT, f"unexpected partial response (Content-Range "
                           f"{headers.get('Content-Range')!r})", retryable=True)
    return start


def _content_range_start(value: str) -> int | None:
    unit, _, rest = value.strip().partition(" ")
    first = rest.split("-", 1)[0]
    # isascii: str.isdigit() is true of "²", which int() refuses (a header is latin-1 text, any byte)
    return int(first) if unit.lower() == "bytes" and first.isascii() and first.isdigit() else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²" (isdigit, yet no number), nor "1e400" or "nan"
        return float(value)
    import email.utils  # an HTTP-date here is rare; at start-up, email.* cost 8 ms (issue 29)

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):  # any text reaches here
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())
