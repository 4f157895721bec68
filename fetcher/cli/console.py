"""The CLI's standard output and error: a reader that goes away stops the printing, never the run.

``fetcher LIST | head -3``, a terminal closed mid-run, stdout redirected to a
full disk: printing is a courtesy, the manifest and the journal are the
record. So a write to a console stream that fails (EPIPE, EIO, ENOSPC, a
closed file) marks that stream closed, points its descriptor at /dev/null
(so that the interpreter's own flush at exit has nowhere to fail either) and
is dropped, as is everything printed to it later. The run goes on and exits
with the status it would have had. Python ignores SIGPIPE, so without this
the first line printed after the reader left raised ``BrokenPipeError``
wherever it was printed from, in the middle of a run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class Console:
    """A text stream that swallows its own write errors (see the module docstring).

    Everything else (``isatty``, ``fileno``, ``encoding``, what tqdm asks) is the wrapped stream's.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_by_reader = False

    def write(self, text: str) -> int:
        if not self.closed_by_reader:
            try:
                self._stream.write(text)
            except (OSError, ValueError):  # ValueError: the file object itself was closed
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.closed_by_reader:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._lost()

    def isatty(self) -> bool:
        return not self.closed_by_reader and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _lost(self) -> None:
        """The reader is gone: drop what the stream still buffers, and send the descriptor to /dev/null."""
        self.closed_by_reader = True
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError, AttributeError):  # not a real file (a test's StringIO)
            return
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
        except OSError:
            pass


@contextmanager
def guarded_streams() -> Iterator[tuple[Console, Console]]:
    """``sys.stdout`` and ``sys.stderr`` wrapped in Consoles while the block runs, then put back."""
    saved = sys.stdout, sys.stderr
    out, err = Console(sys.stdout), Console(sys.stderr)
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr = saved
