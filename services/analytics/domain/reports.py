"""Report parameters and the arithmetic that turns counted rows into reports."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from cjo_platform.errors import Violations

MAX_BUCKETS = 1000
"""Buckets of one time series."""

MAX_ATTRIBUTION_WINDOW = timedelta(days=366)
LOOKBACK_DAYS = (1, 90)
DEFAULT_LOOKBACK_DAYS = 30
DEFAULT_HALF_LIFE_HOURS = 168.0
MAX_HALF_LIFE_HOURS = 90 * 24.0
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Granularity(IntEnum):
    """Bucket width in hours."""

    HOUR = 1
    DAY = 24


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


def epoch_hour(when: datetime) -> int:
    """Whole hours since the Unix epoch (the stored bucket key)."""
    return math.floor((when - EPOCH).total_seconds() / 3600)


def hour_start(hour: int) -> datetime:
    return EPOCH + timedelta(hours=hour)


def check_window(problems: Violations, window: Window | None, field_name: str, *,
                 required: bool, max_span: timedelta | None = None,
                 granularity: Granularity | None = None) -> None:
    """Adds the window's problems: missing when required, outside 2000..2200, an end not after
    its start, too long a span or too many buckets."""
    if window is None:
        problems.check(not required, field_name, "is required")
        return
    for name, when in (("start_time", window.start), ("end_time", window.end)):
        problems.check(EARLIEST <= when < LATEST, f"{field_name}.{name}",
                       "must be between 2000-01-01 and 2200-01-01")
    if not problems.check(window.end > window.start, f"{field_name}.end_time",
                          "must be after start_time"):
        return
    if max_span is not None:
        problems.check(window.end - window.start <= max_span, field_name,
                       f"must span at most {max_span.days} days")
    if granularity is not None:
        buckets = epoch_hour(window.end - timedelta(microseconds=1)) // granularity \
            - epoch_hour(window.start) // granularity + 1
        problems.check(buckets <= MAX_BUCKETS, field_name,
                       f"must hold at most {MAX_BUCKETS} buckets of the granularity, "
                       f"got {buckets}")


def bucket_keys(window: Window, granularity: Granularity) -> list[int]:
    """Bucket keys (epoch hour // granularity) covering the window, in order."""
    first = epoch_hour(window.start) // granularity
    last = epoch_hour(window.end - timedelta(microseconds=1)) // granularity
    return list(range(first, last + 1))


@dataclass(frozen=True)
class NodeCounts:
    """Raw counts of one node: enrollments that visited it, enrollments whose last visit is this
    node, and of those, how many ended completed and how many ended otherwise."""

    node_id: str
    visited: int
    at_node: int
    ended_completed: int
    ended_other: int


@dataclass(frozen=True)
class NodeFunnel:
    node_id: str
    entered: int
    completed: int
    in_progress: int
    dropped: int


def node_funnel(counts: NodeCounts) -> NodeFunnel:
    """An enrollment completed a node when it moved on to another one, or ended there
    completed; it dropped when it ended there otherwise; it is in progress when still there."""
    moved_on = counts.visited - counts.at_node
    return NodeFunnel(
        node_id=counts.node_id,
        entered=counts.visited,
        completed=moved_on + counts.ended_completed,
        in_progress=counts.at_node - counts.ended_completed - counts.ended_other,
        dropped=counts.ended_other,
    )


@dataclass(frozen=True)
class Bucket:
    key: int
    entered: int = 0
    conversions: int = 0
    revenue: float = 0.0
    exited: int = 0


@dataclass
class VersionFunnel:
    version: int
    entered_profiles: int = 0
    converted_profiles: int = 0
    revenue: float = 0.0
    exited: int = 0
    nodes: list[NodeFunnel] = field(default_factory=list)
    series: list[Bucket] = field(default_factory=list)

    @property
    def conversion_rate(self) -> float:
        return self.converted_profiles / self.entered_profiles if self.entered_profiles else 0.0


@dataclass(frozen=True)
class Outcomes:
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    bounced: int = 0
    unsubscribed: int = 0

    def plus(self, other: Outcomes) -> Outcomes:
        return Outcomes(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, ...]:
        return (self.sent, self.delivered, self.opened, self.clicked, self.bounced,
                self.unsubscribed)

    def rates(self) -> dict[str, float]:
        def ratio(a: int, b: int) -> float:
            return a / b if b else 0.0

        return {
            "delivery_rate": ratio(self.delivered, self.sent),
            "open_rate": ratio(self.opened, self.delivered),
            "click_rate": ratio(self.clicked, self.delivered),
            "click_to_open_rate": ratio(self.clicked, self.opened),
            "bounce_rate": ratio(self.bounced, self.sent),
            "unsubscribe_rate": ratio(self.unsubscribed, self.delivered),
        }
