"""Reads of the decision log for reports and off-policy evaluation: counts grouped in the
database, and the decisions with a known outcome streamed in pages.

Both go through ix_decisions_point_time (workspace, point, decide time)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import ColumnElement, Float, and_, case, cast, func, select
from sqlalchemy.orm import Session

from cjo_decisioning.adapters.tables import NO_ACTION, NOT_REWARDED, REWARDED, decisions
from cjo_decisioning.domain.evaluation import LoggedDecision
from cjo_decisioning.domain.replay import logged_decision
from cjo_decisioning.domain.reports import ActionCounts, BucketCount

# Rows fetched per round trip while streaming (on PostgreSQL a server-side cursor): the
# decisions of a long period never sit in memory as rows all at once.
PAGE = 5_000


def _in_period(workspace_id: str, point: str, start: datetime | None,
               end: datetime) -> ColumnElement[bool]:
    conditions = [decisions.c.workspace_id == workspace_id,
                  decisions.c.decision_point == point, decisions.c.decide_time < end]
    if start is not None:
        conditions.append(decisions.c.decide_time >= start)
    return and_(*conditions)


def action_counts(session: Session, workspace_id: str, point: str, start: datetime | None,
                  end: datetime) -> tuple[list[ActionCounts], int]:
    """Per winning action ("" for decisions without an eligible action): decisions,
    exposures, rewards, failures and the mean propensity of the winner (the first logged
    candidate); and the decisions without an eligible action."""
    outcome = decisions.c.outcome
    # The winner is ranked first in the logged candidates.
    propensity = cast(decisions.c.candidates[(0, "propensity")].as_float(), Float)
    rows = session.execute(
        select(decisions.c.action,
               func.count(),
               func.count(decisions.c.expose_time),
               func.sum(case((outcome == REWARDED, 1), else_=0)),
               func.sum(case((outcome == NOT_REWARDED, 1), else_=0)),
               func.sum(case((outcome == NO_ACTION, 1), else_=0)),
               func.avg(case((decisions.c.action != "", propensity))))
        .where(_in_period(workspace_id, point, start, end))
        .group_by(decisions.c.action)).all()
    counts = [ActionCounts(action, int(n), int(exposed or 0), int(rewarded or 0),
                           int(failed or 0), float(mean or 0.0))
              for action, n, exposed, rewarded, failed, _, mean in rows]
    return counts, sum(int(none or 0) for *_, none, _ in rows)


def traffic(session: Session, workspace_id: str, point: str, start: datetime | None,
            end: datetime, bucket_hours: int) -> list[BucketCount]:
    """Decisions per (bucket, winning action), a bucket being ``bucket_hours`` whole hours
    from the Unix epoch (decide_hour is stored for this)."""
    # decide_hour is a non-negative integer, so integer division is the floor on both engines.
    bucket = (decisions.c.decide_hour // bucket_hours).label("bucket")
    rows = session.execute(
        select(bucket, decisions.c.action, func.count())
        .where(_in_period(workspace_id, point, start, end))
        .group_by(bucket, decisions.c.action)).all()
    return [BucketCount(int(index), action, int(n)) for index, action, n in rows]


def decided_with_outcome(session: Session, workspace_id: str, point: str,
                         start: datetime | None, end: datetime,
                         ) -> Iterator[list[LoggedDecision | None]]:
    """The point's decisions in the period whose outcome is known (rewarded, or the window
    lapsed without a reward), oldest first, in pages of :data:`PAGE`; None for a decision
    whose log cannot be used (see domain.replay.logged_decision)."""
    result = session.execute(
        select(decisions.c.action, decisions.c.pick_probability, decisions.c.candidates,
               decisions.c.outcome)
        .where(_in_period(workspace_id, point, start, end),
               decisions.c.outcome.in_((REWARDED, NOT_REWARDED)))
        .order_by(decisions.c.decide_time)
        .execution_options(yield_per=PAGE))
    for page in result.partitions():
        yield [logged_decision(candidates, action, float(pick), outcome == REWARDED)
               for action, pick, candidates, outcome in page]
