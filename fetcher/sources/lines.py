"""Lines of an input file, none read whole past a limit; a binary file told from a text one.

A 50 MB line must cost neither 50 MB of memory nor 50 MB of output: a line
longer than the reader's limit is read on to its end in ``SKIP_PIECE`` pieces
and dropped, and only its first ``MAX_RAW`` bytes and its length are kept
(``LineTooLong``), for the row's error. ``refuse_binary`` stops a run given an
image or an archive instead of a list, before anything is written.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import IO

from fetcher.errors import ConfigError

MAX_RAW = 300  # bytes of an over-long line kept to show it
SKIP_PIECE = 64 * 1024  # the rest of an over-long line is read (and dropped) this much at a time
BINARY_SAMPLE = 8192  # bytes looked at to tell a text list from a binary file


def refuse_binary(stream: IO[bytes], path: str) -> None:
    """ConfigError for a file that is not text (an image, an archive, a database given by mistake).

    The test git and grep use: a NUL byte among the first bytes. Also refused: a
    start where over a tenth of the characters are not UTF-8 or are control
    characters, so a binary file without NULs does not print screens of garbage.
    """
    peek = getattr(stream, "peek", None)
    if peek is None:
        return
    try:
        sample = peek(BINARY_SAMPLE)[:BINARY_SAMPLE]
    except (OSError, EOFError, zlib.error) as exc:  # a corrupt .gz
        raise ConfigError(f"cannot read input {path!r}: {exc}") from None
    if not sample:
        return
    text = sample.decode("utf-8", "replace")[:-1] or " "  # the last character may be cut in two
    odd = sum(1 for ch in text if ch == "\ufffd" or (ch < " " and ch not in "\t\n\r\f\v") or ch == "\x7f")
    if b"\x00" in sample or odd > len(text) / 10:
        raise ConfigError(f"input {path!r} is not a text file (it starts with binary data): give a list "
                          "of URLs, one per line, or a CSV, TSV or JSONL file, as UTF-8 text")




class LineTooLong(Exception):
    """A line over the reader's limit, already read past (its first characters and length kept)."""

    def __init__(self, number: int, start: bytes, length: int) -> None:
        super().__init__(number, start, length)
        self.number, self.start, self.length = number, start, length


def numbered_lines(stream: IO[bytes], limit: int) -> Iterator[tuple[int, bytes | LineTooLong]]:
    """``(number, line)`` for each line, or ``(number, LineTooLong)`` for one over ``limit`` bytes.

    A long line is never held: its first ``MAX_RAW`` bytes are kept, the rest is
    read in ``SKIP_PIECE`` pieces and dropped.
    """
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        if len(line) <= limit or line.endswith(b"\n"):
            yield number, line
            continue
        length = len(line)
        while piece := stream.readline(SKIP_PIECE):
            length += len(piece)
            if piece.endswith(b"\n"):
                length -= 1
                break
        yield number, LineTooLong(number, line[:MAX_RAW], length)


class TextLines:
    """The lines of a text stream for ``csv.reader``, none read whole beyond ``limit`` characters.

    A longer line raises LineTooLong from ``__next__`` (csv.reader passes it on
    and starts its next record afresh); the iterator goes on after it, which a
    generator could not.
    """

    def __init__(self, text: IO[str], limit: int) -> None:
        self._text, self._limit = text, limit
        self.number = 0

    def __iter__(self) -> TextLines:
        return self

    def __next__(self) -> str:
        line = self._text.readline(self._limit + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) <= self._limit or line.endswith("\n"):
            return line
        length = len(line)
        while piece := self._text.readline(SKIP_PIECE):
            length += len(piece)
            if piece.endswith("\n"):
                length -= 1
                break
        start = line[:MAX_RAW].encode("utf-8", "surrogateescape")
        raise LineTooLong(self.number, start, length)
