"""The learning claim with many workspaces held back (identity's watermark lists those behind
the others): each candidate decision is compared with its workspace's cutoff through a join
with the list (one look-up), not a CASE of a branch per workspace listed, which every
candidate ran through (1,000 listed and 200,000 decisions waiting: 3 s a claim, at every poll
of every replica). The claim takes the same decisions, on SQLite and PostgreSQL; the test runs
the real claim, captures its statement and asks the database for its plan."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from outcomes_support import START, decision_row, running
from query_plans import plans

from cjo_decisioning.adapters.outcomes import Claimed, claim_learnable
from cjo_decisioning.adapters.tables import EXPOSED, decisions
from cjo_decisioning.domain.watermarks import LearningCutoffs
from support import Backend

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


async def test_the_claim_joins_the_workspaces_held_back_instead_of_a_branch_each(
        backend: Backend) -> None:
    async with running(backend) as d:
        # Leased until the clock passes START + 1 h (never: it stands still), so the server's
        # own learning worker leaves them to the claim below, run at START + 2 h.
        await d.insert(decisions, [
            decision_row(f"d{i}", "home", f"p{i}", workspace_id=workspace, outcome=EXPOSED,
                         expose_time=START - 2 * HOUR, reward_deadline=START - (i + 1) * MINUTE,
                         lease_owner="elsewhere", lease_until=START + HOUR)
            for workspace in ("ws-0", "ws-1", "ws-2") for i in range(10)])
        # 1,000 workspaces held back: ws-0 before its windows closed (held), ws-1 after
        # (learnable), 998 with no decision; ws-2 is not listed (the default).
        held_back = {f"ws-x{i}": START - 20 * MINUTE for i in range(998)}
        held_back.update({"ws-0": START - 30 * MINUTE, "ws-1": START - MINUTE / 2})
        cutoffs = LearningCutoffs(START, held_back)
        claimed: list[Claimed] = []

        def claim(session: Any) -> None:
            claimed.extend(claim_learnable(session, START + 2 * HOUR, "me", MINUTE, 100,
                                           cutoffs))

        found = plans(d.app.db, claim, "decisions")
        assert sorted((c.workspace_id, c.decision_id) for c in claimed) == sorted(
            (w, f"d{i}") for w in ("ws-1", "ws-2") for i in range(10))
        statement, plan = next((s, p) for s, p in found
                               if s.lstrip().upper().startswith(("SELECT", "WITH")))
        assert "CASE" not in statement.upper()
        assert "JOIN" in statement.upper()
        if not d.app.db.is_sqlite:
            assert re.search(r"Join|Nested Loop", plan), plan
            assert "CASE" not in plan
