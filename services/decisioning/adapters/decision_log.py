"""Reads of the decision log for reports and off-policy evaluation: counts grouped in the
database, and the decisions with a final outcome as the estimators' arrays (only the numbers
they need, extracted from the JSON by the database).

An outcome is final once the reward window closed (its deadline is before ``now``): a reward
arrives while the window is open, a failure only when it closes, so counting open windows
would count their successes and none of their failures. Open ones are counted apart as
pending. Every read goes through ix_decisions_point_time (workspace, point, decide time)."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    and_,
    case,
    cast,
    false,
    func,
    literal_column,
    not_,
    or_,
    select,
)
from sqlalchemy.orm import Session

from cjo_decisioning.adapters.tables import (
    EXPOSED,
    NO_ACTION,
    NOT_REWARDED,
    REWARDED,
    decisions,
)
from cjo_decisioning.domain.evaluation import UNUSABLE_LOG, LoggedDecisions
from cjo_decisioning.domain.replay import log_reason
from cjo_decisioning.domain.reports import ActionCounts, BucketCount


def _in_period(workspace_id: str, point: str, start: datetime | None,
               end: datetime) -> ColumnElement[bool]:
    conditions = [decisions.c.workspace_id == workspace_id,
                  decisions.c.decision_point == point, decisions.c.decide_time < end]
    if start is not None:
        conditions.append(decisions.c.decide_time >= start)
    return and_(*conditions)


def _final(now: datetime) -> ColumnElement[bool]:
    # NOT_REWARDED is only ever set after the deadline; REWARDED is set at once.
    return and_(decisions.c.outcome.in_((REWARDED, NOT_REWARDED)),
                decisions.c.reward_deadline < now)


def _pending(now: datetime) -> ColumnElement[bool]:
    # Exposed and not final; an exposed decision marked learned without an outcome (its point
    # was deleted) never will be, and is neither.
    return and_(decisions.c.expose_time.is_not(None), not_(_final(now)), or_(
        decisions.c.outcome == REWARDED,
        and_(decisions.c.outcome == EXPOSED, decisions.c.learned == false())))


def action_counts(session: Session, workspace_id: str, point: str, start: datetime | None,
                  end: datetime, now: datetime) -> tuple[list[ActionCounts], int]:
    """Per winning action ("" for decisions without an eligible action): decisions,
    exposures, final rewards and failures, pending ones (window open) and the mean propensity
    of the winner (the first logged candidate); and the decisions without an eligible
    action."""
    outcome = decisions.c.outcome
    final = _final(now)
    # The winner is ranked first in the logged candidates (compact: the first of "p"; the
    # first format: the first object's).
    candidates = decisions.c.candidates
    propensity = cast(func.coalesce(candidates[("p", 0)].as_float(),
                                    candidates[(0, "propensity")].as_float()), Float)
    rows = session.execute(
        select(decisions.c.action,
               func.count(),
               func.count(decisions.c.expose_time),
               func.sum(case((and_(final, outcome == REWARDED), 1), else_=0)),
               func.sum(case((and_(final, outcome == NOT_REWARDED), 1), else_=0)),
               func.sum(case((_pending(now), 1), else_=0)),
               func.sum(case((outcome == NO_ACTION, 1), else_=0)),
               func.avg(case((decisions.c.action != "", propensity))))
        .where(_in_period(workspace_id, point, start, end))
        .group_by(decisions.c.action)).all()
    counts = [ActionCounts(action, int(n), int(exposed or 0), int(rewarded or 0),
                           int(failed or 0), float(mean or 0.0), int(pending or 0))
              for action, n, exposed, rewarded, failed, pending, _, mean in rows]
    return counts, sum(int(none or 0) for *_, none, _ in rows)


def count_pending(session: Session, workspace_id: str, point: str, start: datetime | None,
                  end: datetime, now: datetime) -> int:
    """The point's exposed decisions in the period whose outcome is not final yet."""
    return int(session.execute(
        select(func.count()).select_from(decisions)
        .where(_in_period(workspace_id, point, start, end), _pending(now))).scalar_one())


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


# Only the numbers off-policy evaluation needs, extracted from the candidates' JSON by the
# database (the contents and the rest are never decoded in Python): one small JSON array per
# decision. Logged compactly (service_layer.decide), the six columns [[actions], [propensities],
# [values], [levers], [context weights], [pick probabilities]]; in the first format (an object
# per candidate), a row per candidate, [[action, propensity, value, lever, context weight,
# pick probability], ...]. The third column of the query tells which.
_TERMS = ("action", "propensity", "value", "lever", "context_weight", "pick_probability")
_COMPACT_TERMS = ("a", "p", "v", "l", "w", "q")
_COMPACT = {
    # One json_extract with six paths parses the log once (six calls parsed it six times:
    # three times the CPU).
    "sqlite": "CASE WHEN json_type(decisions.candidates) = 'object' "
              "THEN json_extract(decisions.candidates, {}) "
              "ELSE (SELECT json_group_array(json(json_extract(value, {}))) FROM "
              "json_each(decisions.candidates)) END"
              .format(", ".join(f"'$.{t}'" for t in _COMPACT_TERMS),
                      ", ".join(f"'$.{t}'" for t in _TERMS)),
    "postgresql": "CASE WHEN json_typeof(decisions.candidates) = 'object' "
                  "THEN json_build_array({})::text "
                  "ELSE COALESCE((SELECT json_agg(json_build_array({}) ORDER BY n) FROM "
                  "json_array_elements(decisions.candidates) WITH ORDINALITY AS e(c, n)), "
                  "'[]')::text END"
                  .format(", ".join(f"decisions.candidates -> '{t}'" for t in _COMPACT_TERMS),
                          ", ".join(f"c -> '{t}'" for t in _TERMS)),
}
_IS_COMPACT = {
    "sqlite": "json_type(decisions.candidates) = 'object'",
    "postgresql": "json_typeof(decisions.candidates) = 'object'",
}
# The first candidate's flag, in either format (a path of the other format finds nothing).
_FIRST_FLAG = {
    "sqlite": "coalesce(json_extract(decisions.candidates, '$.{}'), "
              "json_extract(decisions.candidates, '$[0].{}'))",
    "postgresql": "coalesce(decisions.candidates ->> '{}', decisions.candidates -> 0 ->> '{}')",
}


def decided_with_outcome(session: Session, workspace_id: str, point: str,
                         start: datetime | None, end: datetime, now: datetime,
                         ) -> LoggedDecisions:
    """The point's decisions in the period whose outcome is final (the window closed, with
    or without a reward), oldest first, as the estimators' arrays; a decision whose log
    cannot be used is kept as UNUSABLE_LOG (see LoggedDecisions.from_rows)."""
    dialect = session.get_bind().dialect.name
    # As text, decoded below in one json.loads for the whole period (a decode per row cost
    # more than the query).
    compact: ColumnElement[Any] = literal_column(_COMPACT[dialect])
    mandatory: ColumnElement[Any] = literal_column(_FIRST_FLAG[dialect].format("m", "mandatory"))
    replaced: ColumnElement[Any] = literal_column(_FIRST_FLAG[dialect].format("r", "replaced"))
    is_compact: ColumnElement[Any] = literal_column(_IS_COMPACT[dialect])
    # Read and decoded a chunk at a time: a period of millions of decisions never holds all
    # its rows and all their text at once (only the estimators' inputs are kept).
    result = session.execute(
        select(decisions.c.action, decisions.c.pick_probability, compact, is_compact,
               mandatory, replaced, decisions.c.outcome)
        .where(_in_period(workspace_id, point, start, end), _final(now))
        .order_by(decisions.c.decide_time),
        execution_options={"yield_per": READ_CHUNK})
    candidates: list[list[list[Any]]] = []
    reason: list[str] = []
    chosen: list[str] = []
    pick_probability: list[float] = []
    reward: list[float] = []
    for rows in result.partitions():
        with _collector_paused():
            try:
                terms = json.loads("[" + ",".join(row[2] or "[]" for row in rows) + "]")
            except ValueError:  # never written so, but one bad row must not fail the rest
                terms = [_decoded(row[2]) for row in rows]
        for (action, pick, _, columns, is_mandatory, is_replaced, outcome), these in zip(
                rows, terms, strict=True):
            if columns and isinstance(these, list):
                these = _rows_of(these)
            usable = isinstance(these, list) and bool(these) and pick is not None and pick > 0
            candidates.append(these if usable else [])
            reason.append(log_reason(_flag(is_mandatory), _flag(is_replaced)) if usable
                          else UNUSABLE_LOG)
            chosen.append(action)
            pick_probability.append(float(pick or 0.0))
            reward.append(1.0 if outcome == REWARDED else 0.0)
    return LoggedDecisions.from_rows(candidates, chosen, pick_probability, reward, reason)


# Rows read and decoded at once by decided_with_outcome.
READ_CHUNK = 20_000

_pause_lock = threading.Lock()
_pauses = 0
_collecting_before = False


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The garbage collector off while a chunk is decoded: the decode makes many small lists
    with no cycle among them, and the collector's passes over them cost as much as the decode.
    The collector is process-wide and evaluations run on worker threads at once, so pauses are
    counted: it is back on as it was when the last one ends, whatever raised, in any order
    (a plain save-disable-restore per call can leave it off for good when two overlap)."""
    global _pauses, _collecting_before
    with _pause_lock:
        if _pauses == 0:
            _collecting_before = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _collecting_before:
                gc.enable()


def _rows_of(columns: list[Any]) -> list[Any] | None:
    """A compact log's six columns as a row per candidate; None when they are malformed."""
    if not all(isinstance(c, list) for c in columns):
        return None
    try:
        return [list(row) for row in zip(*columns, strict=True)]
    except ValueError:
        return None


def _decoded(text: str | None) -> Any:
    try:
        return json.loads(text or "[]")
    except ValueError:
        return None


def _flag(stored: object) -> bool:
    # SQLite's json_extract gives 1/0 for JSON booleans, PostgreSQL's ->> 'true'/'false'.
    return stored in (1, True, "true")
