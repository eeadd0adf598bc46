"""Orchestration's retention kinds (cjo_platform.db.retention), besides the request log and
dead letters every service has: processed inbox events and finished enrollments' steps."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, or_, select, true

from cjo_orchestration.adapters.enrollments import INBOX_SOURCE
from cjo_orchestration.adapters.tables import dead_letters, enrollments, inbox, steps
from cjo_platform.db.retention import Rule

# A processed event's row only dedupes redeliveries, which forwarders make within minutes.
INBOX_DAYS = 7
# Step history is for people looking at an enrollment (GetEnrollment, the console).
STEPS_DAYS = 90


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


RULES = [
    Rule("inbox", inbox, inbox.c.receive_time, INBOX_DAYS, _inbox_removable, indexed=_processed,
         description="events received from identity, once applied"),
    Rule("steps", steps, steps.c.time, STEPS_DAYS, _steps_removable,
         description="step history of finished enrollments"),
]
