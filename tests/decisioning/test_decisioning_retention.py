"""Decisioning's retention: settled decisions older than 90 days go; decisions whose outcome
is not learned yet (a reward window open, or closed but not yet taken by the model) stay, and
so do decisions a contact limit may still count (up to 366 days before a request's context
time, which may lie a day before now), whatever the days."""

from __future__ import annotations

from datetime import timedelta

from decisioning_support import action, create_action, create_point, days, point
from decisioning_support import decisioning_service as decisioning
from retention_support import NOW, service_db
from sqlalchemy import update
from test_decide import ON_DECIDE, decide, reasons

from cjo.decisioning.v1 import action_pb2
from cjo_decisioning.adapters.retention import RULES
from cjo_decisioning.adapters.tables import (
    EXPOSED,
    NO_ACTION,
    NOT_REWARDED,
    PENDING,
    REWARDED,
    decisions,
)
from cjo_decisioning.domain.catalogue import MAX_CONTEXT_TIME_SKEW, MAX_PERIOD
from cjo_platform.clock import ManualClock
from support import Backend


async def test_settled_decisions_go_after_ninety_days(backend: Backend) -> None:
    with service_db("decisioning", backend) as db:
        def decision(decision_id: str, age: int, outcome: int, learned: bool,
                     exposed: timedelta | None = None) -> dict[str, object]:
            """A decision ``age`` days old, exposed ``exposed`` after it was made."""
            decided = NOW - timedelta(days=age)
            return {"workspace_id": "w1", "decision_id": decision_id, "decision_point": "pt",
                    "profile_id": "p", "decide_time": decided,
                    "expose_time": None if exposed is None else decided + exposed,
                    "decide_hour": 0, "candidates": [], "ineligible": [], "features": {},
                    "context": {}, "outcome": outcome, "learned": learned}

        a_year = MAX_PERIOD.days  # the longest period a contact limit may count
        # ... from a context time up to a day before now.
        counted = (MAX_CONTEXT_TIME_SKEW + MAX_PERIOD).days
        db.insert(decisions, [
            decision("rewarded", a_year + 10, REWARDED, True, exposed=timedelta(days=1)),
            decision("lapsed", counted + 1, NOT_REWARDED, True, exposed=timedelta(0)),
            decision("no-action", 91, NO_ACTION, False),
            decision("never-sent", counted + 1, PENDING, False),
            decision("window-open", a_year + 10, EXPOSED, False, exposed=timedelta(0)),
            decision("reward-unlearned", a_year + 10, REWARDED, False, exposed=timedelta(0)),
            decision("young", 89, REWARDED, True, exposed=timedelta(0)),
            # A contact limit still counts these, whatever their outcome and the days.
            decision("learned-contact", 100, REWARDED, True, exposed=timedelta(0)),
            decision("exposed-late", a_year + 1, NOT_REWARDED, True, exposed=timedelta(days=2)),
            # A year and half a day ago: a year-long limit counts it at context.time = now - 1 d.
            decision("skewed-contact", counted, REWARDED, True, exposed=timedelta(hours=12)),
            decision("pending-contact", a_year - 1, PENDING, False)])
        assert await db.retain(RULES) == {"request_log": 0, "decisions": 4}
        assert [r.decision_id for r in db.rows(decisions, decisions.c.decision_id)] == [
            "exposed-late", "learned-contact", "pending-contact", "reward-unlearned",
            "skewed-contact", "window-open", "young"]


async def test_a_contact_limit_counts_exposures_older_than_the_retention(
        backend: Backend) -> None:
    """"Once a year" stays once a year though the log keeps settled decisions 90 days."""
    start = NOW - timedelta(days=100)
    clock = ManualClock(start)
    async with decisioning(backend, clock) as services:
        stub = services.decisioning
        await create_action(stub, action("capped", mandatory=True, contact_limits=[
            action_pb2.ContactLimit(max_exposures=1, period=days(365))]))
        await create_action(stub, action("filler"))
        await create_point(stub, point("home", ["capped", "filler"], exposure=ON_DECIDE))
        first = await decide(stub, "home", "p1")
        assert first.actions[0].action == "capped"
        clock.advance(timedelta(days=100))
        with service_db("decisioning", backend) as db:
            assert db.clock.now() == clock.now()
            # The learner settled the exposure once its reward window closed.
            with db.storage.db.transaction() as session:
                session.execute(update(decisions).where(
                    decisions.c.decision_id == first.decision_id).values(
                    learned=True, outcome=NOT_REWARDED))
            assert await db.retain(RULES) == {"request_log": 0, "decisions": 0}
        again = await decide(stub, "home", "p1")
        assert [a.action for a in again.actions] == ["filler"]
        assert "capped" in reasons(again)
