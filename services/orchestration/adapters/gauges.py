"""Orchestration's queue depths for operators (cjo_platform.metrics): steps due and how late the
oldest is, and events from identity received but not yet applied. Indexed counts only."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import false, func, select
from sqlalchemy.orm import Session

from cjo_orchestration.adapters.tables import enrollments, inbox
from cjo_orchestration.domain.enrollment import EnrollmentState
from cjo_platform.metrics import Gauge, Probe, Reading, age_seconds

DUE_STEPS = Gauge("cjo.orchestration.steps.due",
                  "Enrollments whose current step is due and not yet run")
STEP_LAG = Gauge("cjo.orchestration.steps.lag",
                 "How late the most overdue step is (now - its due time)", "s")
INBOX_EVENTS = Gauge("cjo.inbox.events",
                     "Events received from identity and not yet applied (consumer lag)")
INBOX_AGE = Gauge("cjo.inbox.oldest.age", "Age of the oldest event not yet applied", "s")


def read(session: Session, now: datetime) -> Iterable[Reading]:
    due, oldest_due = session.execute(
        select(func.count(), func.min(enrollments.c.due_time))
        .where(enrollments.c.state == EnrollmentState.ACTIVE.value,
               enrollments.c.due_time <= now)).one()
    yield Reading(DUE_STEPS.name, due)
    yield Reading(STEP_LAG.name, age_seconds(now, oldest_due))
    waiting, oldest = session.execute(
        select(func.count(), func.min(inbox.c.receive_time))
        .where(inbox.c.processed == false())).one()
    yield Reading(INBOX_EVENTS.name, waiting, {"source": "identity"})
    yield Reading(INBOX_AGE.name, age_seconds(now, oldest), {"source": "identity"})


PROBE = Probe("orchestration", [DUE_STEPS, STEP_LAG, INBOX_EVENTS, INBOX_AGE], read)
