"""Report parameters and the arithmetic that turns counted rows into reports."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from cjo_analytics.domain.attribution import Model
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


@dataclass(frozen=True)
class FunnelQuery:
    """A journey's funnel: one version (0 for all), with a time series of the window when a
    granularity is given."""

    journey_id: str
    version: int
    granularity: Granularity | None
    window: Window | None


@dataclass(frozen=True)
class AttributionQuery:
    """Conversions of ``window`` credited by each of ``models`` to the touchpoints of the
    ``lookback`` before them; ``keep_conversions`` of them listed with their touchpoints."""

    window: Window
    models: list[Model]
    lookback: timedelta
    half_life_hours: float
    keep_conversions: int


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


class NodeOutcome(IntEnum):
    """How one enrollment that entered a node fared there, by the first rule that applies:
    it ended at the node with exit reason "merged" (MERGED: not counted at the node, the person
    carries on in the surviving enrollment); it ended at the node (by its exit reason:
    COMPLETED for "completed"/"goal_reached", FAILED for "failed", HELD_OUT for "control",
    DROPPED for any other); it is active and its latest arrival is at the node
    (IN_PROGRESS: parked at a wait, awaiting a send, retrying); a step of the node failed for
    good and it moved on (FAILED: a send whose on_failure is CONTINUE); else it left the node
    onward (COMPLETED). An enrollment that entered a node more than once counts once."""

    IN_PROGRESS = 0
    COMPLETED = 1
    FAILED = 2
    DROPPED = 3
    HELD_OUT = 4
    MERGED = 5


@dataclass(frozen=True)
class NodeFunnel:
    """Enrollments that entered a node, split by their NodeOutcome there (the five add up to
    ``entered``; MERGED ones are not counted at the node)."""

    node_id: str
    entered: int
    completed: int
    in_progress: int
    dropped: int
    failed: int = 0
    held_out: int = 0


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


@dataclass(frozen=True)
class OutcomeRow:
    """Message outcomes of one variant of one content item on one channel."""

    channel: int
    content_key: str
    variant: str
    outcomes: Outcomes


@dataclass(frozen=True)
class ChannelPerformance:
    """Outcomes per channel, per content item (channel, key) and per variant, each in order."""

    channels: list[tuple[int, Outcomes]]
    content_items: list[tuple[tuple[int, str], Outcomes]]
    variants: list[OutcomeRow]


def roll_up_outcomes(rows: Iterable[OutcomeRow]) -> ChannelPerformance:
    """Roll the per-variant rows up to content items and channels."""
    variants = sorted(rows, key=lambda r: (r.channel, r.content_key, r.variant))
    channels: dict[int, Outcomes] = defaultdict(Outcomes)
    items: dict[tuple[int, str], Outcomes] = defaultdict(Outcomes)
    for row in variants:
        channels[row.channel] = channels[row.channel].plus(row.outcomes)
        key = (row.channel, row.content_key)
        items[key] = items[key].plus(row.outcomes)
    return ChannelPerformance(sorted(channels.items()), sorted(items.items()), variants)
