"""The progress bar and the run's report lines: the only module that imports tqdm.

Workers never print. The collector calls ``update`` once per final result and ``report``
for its line, which goes to standard output (the run's report: per-URL lines, then the
summary) and to the ``--log`` file; ``note`` writes a message to standard error (the bar's
stream: warnings, workers joining). tqdm writes either above the bar, so it stays intact.
"""

from __future__ import annotations

import sys
import time
from functools import lru_cache
from typing import Any, TextIO


def human_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


@lru_cache(maxsize=1)
def _bar_class() -> type[Any]:
    """tqdm without its monitor thread, for fetcher's bars only (imported on first use).

    The bar is updated by every result anyway, and a process that runs a single
    thread may start the process backend's workers with fork (process.py). tqdm
    takes this as a class attribute, not a keyword argument (passing
    ``monitor_interval=0`` to the constructor is a ``TqdmKeyError``), so a
    subclass sets it rather than changing every tqdm of the process.
    """
    from tqdm import tqdm

    class Bar(tqdm):  # type: ignore[misc]
        monitor_interval = 0

    return Bar


class Progress:
    """A tqdm bar of files done, with bytes and failures in its postfix.

    Args:
        total: number of URLs if known (an upper bound is fine; fixed at close).
        enabled: draw the bar at all (off when not a terminal, or ``--quiet``).
        stream: where the bar and notes go (stderr).
        log: the ``--log`` file: every report line, timestamped, whether shown or not.
    """

    def __init__(self, total: int | None, enabled: bool, stream: TextIO | None = None,
                 log: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._log = log
        self._bar = None
        self._bytes = 0
        self._failed = 0
        if enabled:
            self._bar = _bar_class()(total=total, unit="file", file=self._stream, dynamic_ncols=True,
                                     mininterval=0.2, smoothing=0.1)

    def update(self, nbytes: int, failed: bool) -> None:
        self._bytes += nbytes
        self._failed += failed
        if self._bar is not None:
            self._bar.set_postfix_str(f"{human_bytes(self._bytes)}, {self._failed} failed", refresh=False)
            self._bar.update(1)

    def tick(self) -> None:
        """Redraw the bar if results came since it was last drawn: tqdm redraws only on an update
        at least ``mininterval`` after the last one, so the last of a burst would wait for the next."""
        if self._bar is not None and self._bar.n != self._bar.last_print_n:
            self._bar.refresh()

    @property
    def logging(self) -> bool:
        return self._log is not None

    def report(self, line: str, show: bool = True) -> None:
        """A line of the run's report: on standard output if ``show``, and in the log."""
        if self._log is not None:
            self.log(line)
        if not show:
            return
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, file=sys.stdout)
        sys.stdout.flush()  # a reader at the other end of a pipe gets each line as it comes

    def log(self, line: str) -> None:
        """Append ``line`` to the ``--log`` file, if there is one, with the time."""
        if self._log is not None:
            try:
                self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {line}\n")
            except (OSError, ValueError) as exc:
                self._log = None  # a log that cannot be written never stops the run
                self.note(f"fetcher: warning: cannot write the --log file ({getattr(exc, 'strerror', None) or exc}); "
                          "no more lines go to it")

    def note(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def close(self, finished: bool = True) -> None:
        """Leave the bar on screen: at its true total when the run ``finished`` (the line count
        was an upper bound: comments, duplicates), else frozen where it stopped (Ctrl-C)."""
        if self._bar is not None:
            if finished:
                self._bar.total = self._bar.n
                self._bar.refresh()
            self._bar.close()
