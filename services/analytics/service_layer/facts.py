"""Recording facts: each fact is stored once, however often (and however concurrently) it is
sent; the services that send them retry until analytics acknowledged."""

from __future__ import annotations

from collections.abc import Sequence

from cjo_analytics.adapters import repository
from cjo_analytics.domain.facts import Fact
from cjo_platform.db.unit_of_work import UnitOfWork


def record_facts(uow: UnitOfWork, workspace_id: str, facts: Sequence[Fact]) -> list[bool]:
    """Record the facts not recorded yet; for each fact, in order, whether it was a duplicate
    (recorded before, or earlier in this batch).

    A concurrent batch carrying the same fact ids either waits for this one and skips them, or
    loses the race and is retried by the unit of work; either way each fact counts once."""
    if not facts:
        return []
    new = repository.record_facts(uow.session, workspace_id, facts, uow.now())
    seen: set[str] = set()
    duplicates: list[bool] = []
    for fact in facts:
        duplicates.append(fact.fact_id not in new or fact.fact_id in seen)
        seen.add(fact.fact_id)
    return duplicates
