"""The rules that can fail a download while it streams, in one place.

``FetchFailure`` (errors.py) is how every rule reports; ``fetch_one`` turns it into a
failed Result. ``CancelFlag``/``Cancelled``: a run's cancel, seen between two reads. ``TransferGuard`` enforces deadlines and size caps chunk by chunk;
``check_content_type``/``check_magic`` keep an HTML error page from being saved
as an image.
"""

from __future__ import annotations

import fnmatch
import time
from typing import TYPE_CHECKING, Protocol

from fetcher.errors import FetchFailure
from fetcher.models import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fetcher.download.ratelimit import RateLimit

MAGIC_BYTES = 64  # enough for every signature check_magic knows


class CancelFlag(Protocol):
    """Anything with ``is_set()``: threading.Event, multiprocessing.Event, gevent Event."""

    def is_set(self) -> bool: ...


class Cancelled(Exception):
    """The run is being cancelled: stop this download between two reads."""




class TransferGuard:
    """Deadlines and size caps for one download.

    Args:
        read_timeout: longest silence allowed between two reads.
        max_time: whole-download deadline in seconds (0: none).
        min_speed: bytes per second below which a transfer counts as stalled (0: off),
            measured over windows of ``min_speed_time`` seconds.
        max_size: largest body accepted, counted on decoded bytes (0: no cap).
        started: monotonic time the attempt began (connecting counts too).
    """

    def __init__(self, read_timeout: float, max_time: float, min_speed: int, min_speed_time: float,
                 max_size: int, started: float) -> None:
        self.read_timeout = read_timeout
        self.max_time = max_time
        self.min_speed = min_speed
        self.min_speed_time = min_speed_time
        self.max_size = max_size
        self.started = started
        self.size = 0
        self._window_start = started
        self._window_bytes = 0
        self.limit: RateLimit | None = None  # --limit-rate's bucket (ratelimit.py), paid per chunk by the Download

    def next_read_timeout(self) -> float:
        """Socket timeout for the next read: never past the deadline or the speed window."""
        now = time.monotonic()
        self._check_time(now)
        limit = self.read_timeout
        if self.max_time:
            limit = min(limit, self.started + self.max_time - now)
        if self.min_speed:
            limit = min(limit, self._window_start + self.min_speed_time - now)
        return max(limit, 0.01)

    def check_declared_size(self, content_length: str | None, encoded: bool, offset: int = 0) -> None:
        """Refuse before reading when the server announces a body over the cap.

        ``offset`` is what a resumed download already has on disk.
        """
        if not self.max_size or not content_length or encoded:
            return
        try:
            declared = int(content_length) + offset
        except ValueError:
            return
        if declared > self.max_size:
            raise FetchFailure(ErrorKind.TOO_LARGE, f"Content-Length {declared} is over --max-size {self.max_size}")

    def account(self, nbytes: int) -> None:
        """Count ``nbytes`` of decoded body; fail on size cap, deadline or stall."""
        self.size += nbytes
        self._window_bytes += nbytes
        if self.max_size and self.size > self.max_size:
            raise FetchFailure(ErrorKind.TOO_LARGE, f"body is over --max-size {self.max_size} bytes")
        self._check_time(time.monotonic())

    def check(self, now: float) -> None:
        """Fail if the deadline has passed or the last speed window was too slow (no bytes needed)."""
        self._check_time(now)

    def timed_out(self) -> FetchFailure:
        """The failure to report when a read hit the timeout this guard set."""
        now = time.monotonic()
        try:
            self._check_time(now)
        except FetchFailure as failure:
            return failure
        return FetchFailure(ErrorKind.TIMEOUT, f"no data for {self.read_timeout:g} s", retryable=True)

    def _check_time(self, now: float) -> None:
        if self.max_time and now - self.started >= self.max_time:
            # Not retried: --max-time is the user's budget for the URL, and a
            # server that dripped once will drip again.
            raise FetchFailure(ErrorKind.TIMEOUT, f"download took longer than --max-time {self.max_time:g} s")
        if self.min_speed and now - self._window_start >= self.min_speed_time:
            speed = self._window_bytes / (now - self._window_start)
            if speed < self.min_speed:
                raise FetchFailure(ErrorKind.TIMEOUT, f"stalled: {speed:.0f} B/s over {self.min_speed_time:g} s "
                                   f"is under --min-speed {self.min_speed}", retryable=True)
            self._window_start, self._window_bytes = now, 0


# Leading bytes of the formats a dataset builder meets. SVG and ICO are text/odd:
# SVG is checked as XML text, ICO by its reserved/type header.
_IMAGE_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),                    # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),               # PNG
    (0, b"GIF87a"), (0, b"GIF89a"),          # GIF
    (8, b"WEBP"),                            # WebP (RIFF....WEBP)
    (0, b"BM"),                              # BMP
    (0, b"II*\x00"), (0, b"MM\x00*"),        # TIFF
    (0, b"\x00\x00\x01\x00"),                # ICO
    (4, b"ftypavif"), (4, b"ftypavis"),      # AVIF
    (4, b"ftypheic"), (4, b"ftypheix"), (4, b"ftypmif1"), (4, b"ftypmsf1"),  # HEIF
    (0, b"\xff\x0a"), (0, b"\x00\x00\x00\x0cJXL "),  # JPEG XL
)
_OTHER_MAGIC = {"application/pdf": (b"%PDF-",)}


def check_content_type(content_type: str | None, accept: tuple[str, ...]) -> None:
    """Fail with ``bad-content`` unless the media type matches one of ``accept``."""
    if not accept:
        return
    media = (content_type or "").split(";")[0].strip().lower()
    if not any(fnmatch.fnmatchcase(media, pattern) for pattern in accept):
        raise FetchFailure(ErrorKind.BAD_CONTENT,
                           f"Content-Type {media or '(none)'!r} is not accepted ({', '.join(accept)})")


def check_magic(content_type: str | None, head: bytes) -> None:
    """Fail with ``bad-content`` when the first bytes contradict the declared type.

    Images must start like an image (an HTML error page served as image/jpeg is
    the classic); PDFs like a PDF. Other types are not checked.
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if media.startswith("image/"):
        if media == "image/svg+xml":
            text = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:512].lower()
            if text.startswith((b"<?xml", b"<svg", b"<!--")) and b"<html" not in text:
                return
        elif any(head[offset:offset + len(magic)] == magic for offset, magic in _IMAGE_MAGIC):
            return
    elif media in _OTHER_MAGIC:
        if head.startswith(_OTHER_MAGIC[media]):
            return
    else:
        return
    preview = head[:16]
    raise FetchFailure(ErrorKind.BAD_CONTENT, f"body does not look like {media}: starts with {preview!r}")


DECODED_CODINGS = frozenset({"gzip", "x-gzip", "deflate", "identity", ""})  # what both clients decode (base.ACCEPT_ENCODING)


def check_encoding(headers: Mapping[str, str]) -> None:
    """Refuse a body in a content coding the clients cannot decode (br, zstd, garbage names): both pass it
    through as it came, and the encoded bytes would be stored as if they were the file."""
    value = headers.get("Content-Encoding") or ""
    unknown = [c for c in (part.strip().lower() for part in value.split(",")) if c not in DECODED_CODINGS]
    if unknown:
        raise FetchFailure(ErrorKind.BAD_CONTENT, f"cannot decode body: Content-Encoding {unknown[0][:40]!r} "
                           "was not asked for (only gzip and deflate are)")


def is_encoded(headers: Mapping[str, str]) -> bool:
    return (headers.get("Content-Encoding") or "identity").strip().lower() not in ("", "identity")


def check_complete(headers: Mapping[str, str], status: int, received: int) -> None:
    """A body shorter than its Content-Length is a failure, never a saved file.

    urllib3 and libcurl already enforce Content-Length on the wire; this second
    check covers identity bodies whatever the transport or its version does.
    """
    declared = headers.get("Content-Length")
    if declared is None or is_encoded(headers):
        return
    try:
        expected = int(declared)
    except ValueError:
        return
    if received < expected:
        raise FetchFailure(ErrorKind.TRUNCATED, f"body ended after {received} of {expected} bytes",
                           retryable=True, http_status=status)
