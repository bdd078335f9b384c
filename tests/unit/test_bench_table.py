"""The benchmark table's arithmetic: ratios, verdicts and percentiles."""

from __future__ import annotations

import os

from bench.__main__ import table
from bench.common import Row, peak_memory_kib, percentile


def test_rate_meets_target_at_or_above_it() -> None:
    row = Row("path", "per second", 90.0, "ceiling", 100.0, 0.9)
    assert round(row.ratio, 6) == 0.9
    assert row.met
    assert not Row("path", "per second", 89.0, "ceiling", 100.0, 0.9).met


def test_latency_meets_target_at_or_below_it() -> None:
    row = Row("revocation", "p99 ms", 30.0, "hop p99", 10.0, 3.0, at_most=True)
    assert row.met
    assert not Row("revocation", "p99 ms", 31.0, "hop p99", 10.0, 3.0, True).met


def test_zero_ceiling_does_not_divide_by_zero() -> None:
    row = Row("path", "per second", 5.0, "ceiling", 0.0, 0.5)
    assert row.ratio == 0.0
    assert not row.met
    assert not Row("latency", "p99 ms", 5.0, "hop p99", 0.0, 3.0, at_most=True).met


def test_table_marks_missed_targets_and_direction() -> None:
    lines = table(
        [
            Row("hit", "per second", 950.0, "healthz", 1000.0, 0.9),
            Row("revocation", "p99 ms", 40.0, "hop p99", 10.0, 3.0, at_most=True),
        ]
    )
    assert lines[2].endswith("| 0.95 | ≥ 0.9 |")
    assert lines[3].endswith("| 4.00 (missed) | ≤ 3.0 |")


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([float(n) for n in range(1, 151)], 0.99) == 149.0


def test_peak_memory_of_this_process() -> None:
    peak = peak_memory_kib(os.getpid())
    assert peak is not None and peak > 1000
