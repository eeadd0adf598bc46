"""What decisioning holds about one person, read back for them (a data subject access
request): their decisions, with the profiles identity merged into theirs."""

from __future__ import annotations

from datetime import datetime

from cjo_decisioning.adapters import decisions as log
from cjo_decisioning.adapters import outcomes as outcome_store
from cjo_decisioning.service_layer.decide import Decision, decision_from_row
from cjo_platform.db.unit_of_work import UnitOfWork


def list_decisions(uow: UnitOfWork, workspace_id: str, profile_id: str,
                   after: tuple[datetime, str] | None, size: int
                   ) -> tuple[list[Decision], tuple[datetime, str] | None]:
    """A page of the person's decisions, newest first, and the cursor of the next page (None
    on the last)."""
    ids = outcome_store.people(uow.session, workspace_id, [profile_id])[profile_id]
    rows = log.for_people(uow.session, workspace_id, ids, after, size + 1)
    page = [decision_from_row(row) for row in rows[:size]]
    last = page[-1] if len(rows) > size else None
    return page, (last.decide_time, last.decision_id) if last is not None else None
