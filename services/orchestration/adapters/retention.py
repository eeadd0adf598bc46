"""Orchestration's retention kinds (cjo_platform.db.retention), besides the request log and
dead letters every service has: processed inbox events, finished enrollments' steps, and the
copy of the person (traits, event properties) ended enrollments hold."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, literal_column, or_, select, true
from sqlalchemy.engine import Row

from cjo_orchestration.adapters.enrollments import INBOX_SOURCE
from cjo_orchestration.adapters.tables import dead_letters, enrollments, inbox, steps
from cjo_platform.db.retention import Rule

# A processed event's row only dedupes redeliveries, which forwarders make within minutes.
INBOX_DAYS = 7
# Step history is for people looking at an enrollment (GetEnrollment, the console).
STEPS_DAYS = 90
# An ended enrollment's traits, properties and entry properties (the person's name, email,
# identifiers, consent; what the events carried) go with its steps: what stays (state, node,
# times, exit reason, goal) is what re-entry, cooldowns and reports read.
ENROLLMENT_SNAPSHOTS_DAYS = STEPS_DAYS


def _processed() -> ColumnElement[bool]:
    """Processed events: the rows of ix_inbox_processed_time, which a pass walks."""
    processed: ColumnElement[bool] = inbox.c.processed == true()
    return processed


def _inbox_removable() -> ColumnElement[bool]:
    """Processed, and not a given-up event a dead letter still points at (its replay needs the
    row)."""
    lettered = exists(select(dead_letters.c.id).where(
        dead_letters.c.workspace_id == inbox.c.workspace_id,
        dead_letters.c.source == INBOX_SOURCE,
        dead_letters.c.item_key == inbox.c.event_id))
    return and_(_processed(), or_(inbox.c.last_error == "", ~lettered))


def _steps_removable() -> ColumnElement[bool]:
    """Steps of enrollments that ended (an active one's history stays whole)."""
    return ~exists(select(enrollments.c.enrollment_id).where(
        enrollments.c.workspace_id == steps.c.workspace_id,
        enrollments.c.enrollment_id == steps.c.enrollment_id,
        enrollments.c.state == "active"))


def _snapshot_stored() -> ColumnElement[bool]:
    """Ended enrollments still holding the person's copy: the rows of ix_enrollments_snapshots,
    which a pass walks."""
    c = enrollments.c
    return and_(c.state != literal_column("'active'"), c.snapshot_removed_time.is_(None))


def _goal_open(now: datetime) -> ColumnElement[bool]:
    """An ended enrollment whose goal window is still open: a conversion's goal filter may read
    its entry properties (``journey.entry``)."""
    c = enrollments.c
    # Not NULL spelled out: NOT (NULL) would keep every enrollment without a goal.
    return and_(c.goal_time.is_(None), c.goal_deadline.is_not(None), c.goal_deadline >= now)


def _forget_snapshot(row: Row[Any], now: datetime) -> dict[str, Any]:
    return {"traits": {}, "properties": {}, "entry_properties": {},
            "snapshot_removed_time": now}


RULES = [
    Rule("inbox", inbox, inbox.c.receive_time, INBOX_DAYS, _inbox_removable, indexed=_processed,
         description="events received from identity, once applied"),
    Rule("steps", steps, steps.c.time, STEPS_DAYS, _steps_removable,
         description="step history of finished enrollments"),
    Rule("enrollment_snapshots", enrollments, enrollments.c.update_time,
         ENROLLMENT_SNAPSHOTS_DAYS, _snapshot_stored, rewrite=_forget_snapshot,
         indexed=_snapshot_stored, needed=_goal_open,
         description="the person's traits and event properties ended enrollments hold"),
]
