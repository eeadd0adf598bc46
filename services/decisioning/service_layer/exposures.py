"""Exposures: a decision the person saw opens its reward window and counts against the first
action's budget, once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from cjo_decisioning.adapters import catalogue as repository
from cjo_decisioning.adapters import decisions as log
from cjo_decisioning.adapters.tables import NO_ACTION, PENDING
from cjo_decisioning.domain.catalogue import DEFAULT_WINDOW, decision_not_found
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import CjoError


def expose(uow: UnitOfWork, workspace_id: str,
           exposures: Sequence[tuple[str, datetime | None]]) -> list[bool | CjoError]:
    """Per (decision id, expose time or None for now), in order: whether the decision had
    been exposed before (a repeat, also within the call), or NOT_FOUND (DECISION_NOT_FOUND).
    A decision without an action (NO_ACTION) has nothing to expose: it is left as it is."""
    now = uow.now()
    rows = log.for_exposure(uow.session, workspace_id, {d for d, _ in exposures})
    windows: dict[str, timedelta] = {}
    for point in {row["decision_point"] for row in rows.values()}:
        stored = repository.get_point(uow.session, workspace_id, point)
        # A deleted point's decisions still learn nothing, but keep the default window.
        windows[point] = stored.point.reward.effective_window if stored else DEFAULT_WINDOW
    counted: dict[str, int] = defaultdict(int)
    done: set[str] = set()
    answers: list[bool | CjoError] = []
    for decision_id, when in exposures:
        row = rows.get(decision_id)
        if row is None:
            answers.append(decision_not_found(decision_id))
            continue
        if row["outcome"] == NO_ACTION:
            answers.append(False)
            continue
        if decision_id in done or row["outcome"] != PENDING:
            answers.append(True)
            continue
        at = when or now
        log.expose(uow.session, workspace_id, decision_id, at,
                   at + windows[row["decision_point"]])
        done.add(decision_id)
        if row["action"]:
            counted[row["action"]] += 1
        answers.append(False)
    repository.add_exposures(uow.session, workspace_id, counted)
    return answers
