"""Delivery's queue depths for operators (cjo_platform.metrics): messages not yet final by
status, and how late the most overdue queued one is. Read on the (status, next_attempt_time)
index, never over the sent history."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cjo_delivery.adapters.tables import messages
from cjo_delivery.domain.messages import FINAL_STATUSES, MessageStatus
from cjo_platform.metrics import Gauge, Probe, Reading, age_seconds

PENDING = [s.value for s in MessageStatus if s not in FINAL_STATUSES]

MESSAGES = Gauge("cjo.delivery.messages",
                 "Messages not yet final (queued, sending, deferred), by status")
SEND_LAG = Gauge("cjo.delivery.send.lag",
                 "How late the most overdue queued message is (now - its due time)", "s")


def read(session: Session, now: datetime) -> Iterable[Reading]:
    counts: dict[str, int] = dict(session.execute(
        select(messages.c.status, func.count()).where(messages.c.status.in_(PENDING))
        .group_by(messages.c.status)).tuples().all())
    for status in PENDING:  # a state with nothing in it reads 0, not "no data"
        yield Reading(MESSAGES.name, counts.get(status, 0), {"status": status})
    oldest = session.execute(
        select(func.min(messages.c.next_attempt_time))
        .where(messages.c.status == MessageStatus.QUEUED.value,
               messages.c.next_attempt_time <= now)).scalar_one()
    yield Reading(SEND_LAG.name, age_seconds(now, oldest))


PROBE = Probe("delivery", [MESSAGES, SEND_LAG], read)
