"""Identity's queue depths for operators (cjo_platform.metrics): profiles whose segments are
due for a time-based recompute, how late the oldest is, and segment backfills not yet done."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cjo_identity.adapters.tables import backfills, profiles
from cjo_platform.metrics import Gauge, Probe, Reading, age_seconds

RECOMPUTES = Gauge("cjo.identity.recomputes.due",
                   "Profiles whose time-based segment membership is due for a recompute")
RECOMPUTE_LAG = Gauge("cjo.identity.recomputes.lag",
                      "How late the most overdue segment recompute is", "s")
BACKFILLS = Gauge("cjo.identity.backfills", "Segment backfills not yet done, by state")

UNFINISHED = ("pending", "running")


def read(session: Session, now: datetime) -> Iterable[Reading]:
    due, oldest = session.execute(
        select(func.count(), func.min(profiles.c.recompute_due))
        .where(profiles.c.recompute_due <= now)).one()
    yield Reading(RECOMPUTES.name, due)
    yield Reading(RECOMPUTE_LAG.name, age_seconds(now, oldest))
    counts: dict[str, int] = dict(session.execute(
        select(backfills.c.state, func.count()).where(backfills.c.state.in_(UNFINISHED))
        .group_by(backfills.c.state)).tuples().all())
    for state in UNFINISHED:
        yield Reading(BACKFILLS.name, counts.get(state, 0), {"state": state})


PROBE = Probe("identity", [RECOMPUTES, RECOMPUTE_LAG, BACKFILLS], read)
