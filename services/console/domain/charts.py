"""Intervals on one axis (experiment lifts, posterior rewards), as coordinates for an SVG.
Pure: numbers in, positions out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CHART_WIDTH = 520
LABEL_WIDTH = 150
ROW_HEIGHT = 34
PADDING = 16


@dataclass(frozen=True)
class IntervalRow:
    """One estimate with its interval, e.g. an arm's lift over control."""

    label: str
    estimate: float
    lower: float
    upper: float


@dataclass(frozen=True)
class PlacedInterval:
    label: str
    estimate: float
    lower: float
    upper: float
    y: int
    x_lower: float
    x_estimate: float
    x_upper: float


@dataclass(frozen=True)
class IntervalChart:
    rows: tuple[PlacedInterval, ...]
    width: int
    height: int
    x_reference: float | None  # where the reference value (e.g. zero lift) is, when in range
    axis_min: float
    axis_max: float


def interval_chart(rows: Sequence[IntervalRow], reference: float | None = 0.0) -> IntervalChart:
    """Scale every interval onto one horizontal axis that also shows ``reference`` (zero lift:
    an interval crossing it is not a clear win). Non-finite bounds (no data) collapse onto the
    estimate rather than stretching the axis to infinity."""
    clean = [_finite(r) for r in rows]
    values = [v for r in clean for v in (r.lower, r.estimate, r.upper)]
    if reference is not None:
        values.append(reference)
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if math.isclose(low, high):
        low, high = low - 1.0, high + 1.0
    span = high - low
    low, high = low - span * 0.05, high + span * 0.05
    plot_left, plot_right = LABEL_WIDTH, CHART_WIDTH - PADDING

    def x(value: float) -> float:
        return round(plot_left + (value - low) / (high - low) * (plot_right - plot_left), 1)

    placed = tuple(
        PlacedInterval(r.label, r.estimate, r.lower, r.upper, PADDING + i * ROW_HEIGHT + 10,
                       x(r.lower), x(r.estimate), x(r.upper))
        for i, r in enumerate(clean))
    return IntervalChart(placed, CHART_WIDTH, PADDING * 2 + max(len(clean), 1) * ROW_HEIGHT,
                         x(reference) if reference is not None else None, low, high)


def _finite(row: IntervalRow) -> IntervalRow:
    estimate = row.estimate if math.isfinite(row.estimate) else 0.0
    lower = row.lower if math.isfinite(row.lower) else estimate
    upper = row.upper if math.isfinite(row.upper) else estimate
    return IntervalRow(row.label, estimate, min(lower, estimate), max(upper, estimate))
