"""Decisioning's retention: settled decisions older than 90 days go; decisions whose outcome
is not learned yet (a reward window open, or closed but not yet taken by the model) stay."""

from __future__ import annotations

from datetime import timedelta

from retention_support import NOW, service_db

from cjo_decisioning.adapters.retention import RULES
from cjo_decisioning.adapters.tables import (
    EXPOSED,
    NO_ACTION,
    NOT_REWARDED,
    PENDING,
    REWARDED,
    decisions,
)
from support import Backend


async def test_settled_decisions_go_after_ninety_days(backend: Backend) -> None:
    with service_db("decisioning", backend) as db:
        def decision(decision_id: str, age: int, outcome: int, learned: bool) -> dict[str, object]:
            return {"workspace_id": "w1", "decision_id": decision_id, "decision_point": "pt",
                    "profile_id": "p", "decide_time": NOW - timedelta(days=age),
                    "decide_hour": 0, "candidates": [], "ineligible": [], "features": {},
                    "context": {}, "outcome": outcome, "learned": learned}

        db.insert(decisions, [
            decision("rewarded", 100, REWARDED, True), decision("lapsed", 95, NOT_REWARDED, True),
            decision("no-action", 91, NO_ACTION, False),
            decision("never-sent", 120, PENDING, False),
            decision("window-open", 100, EXPOSED, False),
            decision("reward-unlearned", 100, REWARDED, False),
            decision("young", 89, REWARDED, True)])
        assert await db.retain(RULES) == {"request_log": 0, "decisions": 4}
        assert [r.decision_id for r in db.rows(decisions, decisions.c.decision_id)] == [
            "reward-unlearned", "window-open", "young"]
