"""A decision point's report, assembled from per-action counts the database grouped: each
action's share of the decisions, the Beta posterior of its reward rate, and its share of the
traffic per time bucket."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cjo_platform.errors import Violations
from cjo_platform.stats import beta_interval

CREDIBLE_LEVEL = 0.95
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_BUCKET = timedelta(days=1)
MIN_BUCKET, MAX_BUCKET = timedelta(hours=1), timedelta(days=31)


@dataclass(frozen=True)
class ReportQuery:
    decision_point: str
    start: datetime | None = None
    end: datetime | None = None  # None: now
    bucket: timedelta | None = None  # None: DEFAULT_BUCKET

    @property
    def bucket_width(self) -> timedelta:
        return self.bucket or DEFAULT_BUCKET


def check_query(query: ReportQuery) -> None:
    """Every problem of the request, all at once."""
    v = Violations()
    if query.start is not None and query.end is not None:
        v.check(query.start < query.end, "end_time", "must be after start_time")
    if query.bucket is not None:
        # Decisions are bucketed by their whole hour (decide_hour), hence whole hours.
        v.check(MIN_BUCKET <= query.bucket <= MAX_BUCKET
                and query.bucket % timedelta(hours=1) == timedelta(0), "bucket",
                "must be a whole number of hours from 1 hour to 31 days")
    v.raise_if_any()


@dataclass(frozen=True)
class ActionCounts:
    """What the decision log holds for one action that won decisions (``action`` "" for the
    decisions without an eligible action)."""

    action: str
    decisions: int
    exposures: int
    rewards: int  # final: the window closed
    failures: int
    mean_propensity: float
    pending: int = 0  # exposed, the window still open (rewarded already or not)


@dataclass(frozen=True)
class ActionFigures:
    action: str
    decisions: int
    exposures: int
    rewards: int
    failures: int
    share: float
    posterior_mean: float
    posterior_lower: float
    posterior_upper: float
    mean_propensity: float
    pending: int = 0


@dataclass(frozen=True)
class BucketCount:
    """Decisions an action (or "" for none eligible) won in the bucket that starts
    ``bucket * width`` hours after the Unix epoch."""

    bucket: int
    action: str
    decisions: int


@dataclass(frozen=True)
class ActionShare:
    action: str
    decisions: int
    share: float


@dataclass(frozen=True)
class Bucket:
    start: datetime
    decisions: int
    actions: tuple[ActionShare, ...]


@dataclass(frozen=True)
class DecisionReport:
    decisions: int
    no_action: int
    actions: tuple[ActionFigures, ...]
    buckets: tuple[Bucket, ...]
    # The workspace's forwarding watermark of the rewards (domain.watermarks), if reported.
    rewards_delivered_before: datetime | None = None


def action_figures(counts: ActionCounts, total: int) -> ActionFigures:
    """The counts with the share of ``total`` and the posterior Beta(1 + rewards, 1 +
    failures) of the reward rate from final outcomes only (a uniform prior: an action without
    outcomes reads 0.5 with an interval as wide as it gets)."""
    a, b = 1 + counts.rewards, 1 + counts.failures
    lower, upper = beta_interval(a, b, CREDIBLE_LEVEL)
    return ActionFigures(
        action=counts.action, decisions=counts.decisions, exposures=counts.exposures,
        rewards=counts.rewards, failures=counts.failures,
        share=counts.decisions / total if total else 0.0,
        posterior_mean=a / (a + b), posterior_lower=lower, posterior_upper=upper,
        mean_propensity=counts.mean_propensity, pending=counts.pending)


def decision_report(counts: Iterable[ActionCounts], no_action: int,
                    candidate_actions: Sequence[str], bucket_counts: Iterable[BucketCount],
                    bucket_width: timedelta) -> DecisionReport:
    """The report: every candidate action of the point (those that won nothing too) and every
    action that won decisions in the period (also one the point no longer names), by key;
    buckets that hold decisions, oldest first."""
    by_action = {c.action: c for c in counts}
    total = sum(c.decisions for c in by_action.values())
    keys = sorted((set(by_action) | set(candidate_actions)) - {""})
    actions = tuple(action_figures(by_action.get(key) or ActionCounts(key, 0, 0, 0, 0, 0.0),
                                   total) for key in keys)
    buckets: dict[int, list[BucketCount]] = {}
    for row in bucket_counts:
        buckets.setdefault(row.bucket, []).append(row)
    return DecisionReport(
        decisions=total, no_action=no_action, actions=actions,
        buckets=tuple(_bucket(index, rows, bucket_width)
                      for index, rows in sorted(buckets.items())))


def _bucket(index: int, rows: Sequence[BucketCount], width: timedelta) -> Bucket:
    decisions = sum(r.decisions for r in rows)
    return Bucket(
        start=EPOCH + index * width, decisions=decisions,
        actions=tuple(ActionShare(r.action, r.decisions, r.decisions / decisions)
                      for r in sorted(rows, key=lambda r: r.action) if r.action))
