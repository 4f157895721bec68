"""The latency benchmark's mid-run rate: ramp-up and tail left out, the steady state kept."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from bench_latency import mid_run_rate  # noqa: E402


def rounds(pool: int, starts: list[float], spread: float) -> list[float]:
    """Response times: ``pool`` responses per round, evenly over ``spread`` s from each start."""
    return [start + spread * i / pool for start in starts for i in range(pool)]


def test_a_slow_first_and_last_round_do_not_count():
    # Round 1 finishes late (connections being opened), the last one trails off; rounds 2-4
    # go out every 0.2 s: the mid-run rate is pool / 0.2 whatever the ends did.
    sent = rounds(10, [0.5], 0.3) + rounds(10, [0.8, 1.0, 1.2], 0.0) + rounds(10, [1.4], 0.6)
    assert mid_run_rate(sent, 10) == pytest.approx(30 / (1.2 - (0.5 + 0.3 * 9 / 10)))


def test_the_steady_state_of_a_client_that_falls_behind():
    sent = rounds(100, [0.25 * k for k in range(1, 7)], 0.0)  # a round every 0.25 s, not 0.2
    rate = mid_run_rate(sent, 100)
    assert rate is not None and abs(rate - 100 / 0.25) < 1e-6


def test_under_three_rounds_there_is_no_mid_run():
    assert mid_run_rate(rounds(10, [0.2, 0.4], 0.0), 10) is None
    assert mid_run_rate([], 0) is None
