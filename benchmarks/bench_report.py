"""Collecting measured runs into medians, and printing them as Markdown tables."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench_measure import Measurement

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One verified run: its measurement and the work it did."""

    measurement: Measurement
    files: int
    bytes: int

    @property
    def files_per_s(self) -> float:
        return self.files / self.measurement.wall_s

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MIB / self.measurement.wall_s

    @property
    def cpu_us_per_file(self) -> float:
        """User+sys µs of the whole tree per file, start-up included (issue 29's yardstick)."""
        return self.measurement.cpu_s / self.files * 1e6

    @property
    def rss_mib(self) -> float:
        return self.measurement.peak_rss / MIB


@dataclass
class Cell:
    """All repetitions of one (dataset, pool, tool); any failed repetition fails the cell."""

    dataset: str
    describe: str
    pool: int
    label: str
    is_reference: bool
    samples: list[Sample] = field(default_factory=list)
    failure: str | None = None

    def median(self, metric: str) -> float:
        return statistics.median(getattr(sample, metric) for sample in self.samples)

    def spread(self) -> str:
        """(max − min) / median of the wall times: how far to trust the medians."""
        walls = [sample.measurement.wall_s for sample in self.samples]
        if len(walls) < 2:
            return "–"
        return f"{(max(walls) - min(walls)) / statistics.median(walls):.0%}"


# (column title, Sample property)
# CPU per file right after files/s: the two figures issue 29 holds the default to (<= 1.5x curl's
# CPU, >= 0.7x its files/s), each with its ratio to curl in the same run.
METRICS = (
    ("files/s", "files_per_s"),
    ("CPU µs / file", "cpu_us_per_file"),
    ("MiB/s", "mib_per_s"),
    ("peak RSS MiB", "rss_mib"),
)


def _number(value: float) -> str:
    """Three significant figures, thousands separated: 11,792 · 977 · 81.3 · 0.07."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(value: float, reference: float | None) -> str:
    if not reference:
        return ""
    ratio = value / reference
    return f" ({ratio:.1f}×)" if ratio >= 10 else f" ({ratio:.2f}×)"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> list[str]:
    align = ["---" if i < right_from else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def main_table(cells: Sequence[Cell]) -> list[str]:
    """One row per cell; each figure with its ratio to curl in the same dataset and pool."""
    references = {(c.dataset, c.pool): c for c in cells
                  if c.is_reference and c.samples and c.failure is None}
    rows = []
    for cell in cells:
        head = [f"{cell.dataset} ({cell.describe})", cell.label, str(cell.pool)]
        if cell.failure is not None or not cell.samples:
            rows.append(head + [f"**FAILED**: {cell.failure or 'no run'}", "", "", "", "", ""])
            continue
        reference = references.get((cell.dataset, cell.pool))
        figures = []
        for _, metric in METRICS:
            value = cell.median(metric)
            ref = reference.median(metric) if reference else None
            figures.append(_number(value) + _ratio(value, ref))
        rows.append(head + figures + [cell.spread()])
    header = ["dataset", "tool", "pool", *(title for title, _ in METRICS), "spread"]
    return markdown_table(header, rows, 2)


@dataclass(frozen=True)
class LatencySample:
    """One verified run of the latency-bound scenario."""

    measurement: Measurement
    requests: int
    server_window_s: float  # first request received → last response sent, as the server saw it
    max_open: int
    mid_run_rate: float | None = None  # requests/s between the first round and the last (bench_latency)


@dataclass
class LatencyCell:
    label: str
    pool: int
    delay: float
    samples: list[LatencySample] = field(default_factory=list)
    failure: str | None = None
    skipped: str | None = None  # why it did not run at all (e.g. no gevent backend yet)

    @property
    def ideal(self) -> float:
        return self.pool / self.delay

    def median(self, fn: str) -> float:
        values = {
            "whole": [s.requests / s.measurement.wall_s for s in self.samples],
            "window": [s.requests / s.server_window_s for s in self.samples if s.server_window_s > 0],
            "mid": [s.mid_run_rate for s in self.samples if s.mid_run_rate is not None],
            "rss": [s.measurement.peak_rss / MIB for s in self.samples],
            "cpu": [s.measurement.cpu_s for s in self.samples],
            "open": [float(s.max_open) for s in self.samples],
        }[fn]
        return statistics.median(values) if values else 0.0


def latency_table(cells: Sequence[LatencyCell]) -> list[str]:
    rows = []
    for cell in cells:
        requests = cell.samples[0].requests if cell.samples else 0
        head = [cell.label, f"{cell.pool:,}", f"{requests:,}" if requests else "", f"{cell.ideal:,.0f}"]
        if cell.skipped is not None:
            rows.append(head + [f"skipped: {cell.skipped}", "", "", "", "", ""])
            continue
        if cell.failure is not None or not cell.samples:
            rows.append(head + [f"**FAILED**: {cell.failure or 'no run'}", "", "", "", "", ""])
            continue
        mid, window, whole = cell.median("mid"), cell.median("window"), cell.median("whole")
        rows.append(head + [
            f"{mid:,.0f} ({mid / cell.ideal:.0%})" if mid else "(under 3 rounds)",
            f"{window:,.0f} ({window / cell.ideal:.0%})",
            f"{whole:,.0f} ({whole / cell.ideal:.0%})",
            f"{cell.median('open'):,.0f}",
            _number(cell.median("cpu")),
            _number(cell.median("rss")),
        ])
    header = ["tool", "pool", "requests", "pool ÷ delay req/s", "achieved req/s, mid-run",
              "achieved req/s, server window",
              "achieved req/s, whole run", "max open conns", "CPU s", "peak RSS MiB"]
    return markdown_table(header, rows, 1)
