"""Fact storage: deduplicated bulk inserts and aggregate queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from cjo_analytics.adapters.tables import facts
from cjo_analytics.domain.facts import Fact, FactCount, FactType
from cjo_platform.db import insert_ignore


def record_facts(session: Session, workspace_id: str, batch: Sequence[Fact],
                 now: datetime) -> set[str]:
    """Insert facts not yet recorded; returns the ids that were new."""
    rows = [
        {"workspace_id": workspace_id, "fact_id": f.fact_id, "type": f.type.value,
         "profile_id": f.profile_id, "journey_id": f.journey_id,
         "enrollment_id": f.enrollment_id, "message_id": f.message_id,
         "occur_time": f.occur_time, "record_time": now}
        for f in batch
    ]
    return set(insert_ignore(session, facts, rows, returning=facts.c.fact_id))


def journey_counts(session: Session, workspace_id: str, journey_id: str) -> list[FactCount]:
    rows = session.execute(
        select(facts.c.type, func.count(), func.count(distinct(facts.c.profile_id)))
        .where(facts.c.workspace_id == workspace_id, facts.c.journey_id == journey_id)
        .group_by(facts.c.type)
    ).all()
    order = list(FactType)
    counts = [FactCount(FactType(t), int(n), int(p)) for t, n, p in rows]
    return sorted(counts, key=lambda c: order.index(c.type))
