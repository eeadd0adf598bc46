"""Exposures: a decision the person saw opens its reward window, once, and takes the reward
event that came before it, if one did (delivery's SENT fact and identity's event come on
different topics: domain.outcomes). (The first action's budget was reserved when the decision
was made: see decide.)"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from cjo_decisioning.adapters import catalogue as repository
from cjo_decisioning.adapters import decisions as log
from cjo_decisioning.adapters import outcomes
from cjo_decisioning.adapters.tables import NO_ACTION, PENDING
from cjo_decisioning.domain.catalogue import DEFAULT_WINDOW, decision_not_found
from cjo_decisioning.domain.outcomes import take_early_rewards
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import CjoError, InvalidArgument

# How far ahead of the server's clock a caller's exposure time may be (its clock's skew).
MAX_CLOCK_SKEW = timedelta(minutes=5)


def expose(uow: UnitOfWork, workspace_id: str,
           exposures: Sequence[tuple[str, datetime | None]], *,
           clamp: bool = False) -> list[bool | CjoError]:
    """Per (decision id, expose time or None for now), in order: whether the decision had
    been exposed before (a repeat, also within the call), or NOT_FOUND (DECISION_NOT_FOUND).
    A decision without an action (NO_ACTION) has nothing to expose: it is left as it is. An
    exposure time before the decision's is INVALID_ARGUMENT (``expose_time``); with ``clamp``
    (a fact forwarded by delivery, whose clock may differ a little) it is the decision's
    time instead."""
    now = uow.now()
    rows = log.for_exposure(uow.session, workspace_id, {d for d, _ in exposures})
    windows: dict[str, timedelta] = {}
    for point in {row["decision_point"] for row in rows.values()}:
        stored = repository.get_point(uow.session, workspace_id, point)
        # A deleted point's decisions still learn nothing, but keep the default window.
        windows[point] = stored.point.reward.effective_window if stored else DEFAULT_WINDOW
    done: set[str] = set()
    exposed: list[tuple[str, datetime, datetime]] = []
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
        if clamp:
            at = max(at, row["decide_time"])
        if at < row["decide_time"]:
            answers.append(InvalidArgument.one(
                "expose_time", f"must not be before the decision ({row['decide_time']})"))
            continue
        deadline = at + windows[row["decision_point"]]
        log.expose(uow.session, workspace_id, decision_id, at, deadline)
        exposed.append((decision_id, at, deadline))
        done.add(decision_id)
        answers.append(False)
    settle_early_rewards(uow.session, workspace_id, exposed)
    return answers


def settle_early_rewards(session: Session, workspace_id: str,
                         exposed: Sequence[tuple[str, datetime, datetime]]) -> None:
    """Reward the decisions just exposed, (id, exposure, deadline), by the earliest reward event
    that came before the exposure and lies inside its window (domain.outcomes), and forget the
    events kept for them. The kept rows are locked first (outcomes.early_rewards_of): another
    exposure's transaction that took an event waits here, and its rows are then gone. An event
    is forgotten for the other decisions only when its reward applied (a decision rewarded or
    learned meanwhile takes nothing: the event stays for the others)."""
    if not exposed:
        return
    kept = outcomes.early_rewards_of(session, workspace_id, [i for i, _, _ in exposed])
    if not kept:
        return
    applied = outcomes.reward_each(session, workspace_id, take_early_rewards(exposed, kept))
    points = {k.decision_id: k.decision_point for k in kept}
    outcomes.drop_early_rewards(session, workspace_id, [i for i, _, _ in exposed],
                                [(points[r.decision_id], r.reward_event_id) for r in applied])
