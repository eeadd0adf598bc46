"""Attribution's facts of a workspace the planner's statistics do not know yet (a new tenant
inside a big facts table, until autovacuum's ANALYZE) are probed by (workspace, type, time
range) per fact type: with the workspace a constant, PostgreSQL rated such a workspace at one
row and read its every fact through ix_facts_funnel by the workspace alone, filtered by type
and time, on every report (151 ms for a 2-hour window of a 100,000-fact workspace)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from query_plans import plans, probed_by
from sqlalchemy import insert, text
from test_fact_storage import db  # noqa: F401 - the fixture

from cjo_analytics.adapters import repository
from cjo_analytics.adapters.tables import profile_aliases
from cjo_analytics.domain.facts import Fact, FactType
from cjo_analytics.domain.reports import Window
from cjo_platform.db import Database

T0 = datetime(2026, 3, 1, tzinfo=UTC)
FACTS = 3000
KINDS = (FactType.MESSAGE_DELIVERED, FactType.MESSAGE_OPENED, FactType.MESSAGE_CLICKED,
         FactType.NODE_VISITED, FactType.CONVERTED, FactType.GOAL_REACHED)


def facts_of(n: int) -> list[Fact]:
    """A fact a minute (50 hours), six kinds in turn, 299 profiles; a goal and a conversion
    of one purchase share its source event."""
    return [Fact(f"f{i}", KINDS[i % 6], f"p{i % 299}", f"j{i % 4}", f"e{i}", f"m{i // 6}",
                 T0 + timedelta(minutes=i), channel=1 + i % 3, content_key=f"c{i % 5}",
                 revenue=float(i % 7), source_event_id=f"ev{i // 6}") for i in range(n)]


def test_a_new_workspaces_attribution_is_probed_by_type_and_time(db: Database) -> None:  # noqa: F811
    def load(workspace_id: str) -> None:
        with db.transaction() as session:
            for start in range(0, FACTS, 500):
                repository.record_facts(session, workspace_id,
                                        facts_of(FACTS)[start:start + 500], T0)
            session.execute(insert(profile_aliases), [
                {"workspace_id": workspace_id, "merged_profile_id": f"p{i}",
                 "survivor_profile_id": f"p{i + 1}"} for i in range(0, 300, 10)])

    load("ws-a")
    if not db.is_sqlite:
        with db.transaction() as session:
            session.execute(text("ANALYZE facts"))
            session.execute(text("ANALYZE profile_aliases"))
    load("newcomer")  # the statistics know ws-a only

    window = Window(T0 + timedelta(hours=20), T0 + timedelta(hours=22))
    reads = [lambda s, every=every: repository.attribution_data(
        s, "newcomer", window, timedelta(hours=3), every) for every in (False, True)]
    captured = [found for read in reads for found in plans(db, read, " facts ")]
    # Every read of facts searches by type or, for the converting people's earlier facts, by
    # profile id (SQLite: type=? / profile_id=?; PostgreSQL: an index condition), none by the
    # workspace alone.
    filtered = [f"{statement}\n{plan}" for statement, plan in captured
                if not (probed_by(db, plan, "type") or probed_by(db, plan, "profile_id"))
                or any(re.fullmatch(r"\s*Index Cond: \(\(workspace_id\)::text = \S+\)", line)
                       for line in plan.splitlines())]
    assert not filtered, "\n\n".join(filtered)

    if db.is_sqlite:
        return
    # PostgreSQL's probes read what the workspace-wide statements read, row for row.
    with db.transaction() as session:
        for every in (False, True):
            for workspace_id in ("newcomer", "ws-a"):
                since = window.start - timedelta(hours=3) if every else window.start
                probed = repository._pg_attribution_rows(
                    session, workspace_id, window, since, timedelta(hours=3), every)
                read = repository._attribution_rows(
                    session, workspace_id, window, since, timedelta(hours=3), every)
                conversions = [tuple(r) for r in probed[0]]
                touches = [tuple(r) for r in probed[1]]
                assert conversions == [tuple(r) for r in read[0]]
                assert touches == [tuple(r) for r in read[1]]
                assert conversions and touches
                assert {r[1] for r in conversions} & {f"p{i + 1}" for i in range(0, 300, 10)}
