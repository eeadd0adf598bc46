"""Decisioning's reads by key for a workspace the planner's statistics do not know yet (a new
tenant inside a big log, or a fresh database before autovacuum's first ANALYZE): a Decide
call's replays by request id, contacts and send-time hours by person, an exposure's decisions
by id, a reward's aliases and open decisions by person, a merge's survivors. Each probes the
index on (workspace_id, key) per key; with the workspace a constant, PostgreSQL rated the new
workspace at one row and read all of it through an index's workspace prefix on every call,
filtering by the keys (each call slower than the last as the tenant grew)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from decision_log_support import log_server
from query_plans import plans, probed_by
from sqlalchemy import text
from sqlalchemy.orm import Session
from test_decision_log_insert import NOW, row

from cjo_decisioning.adapters import decisions as log
from cjo_decisioning.adapters import engagement, outcomes
from cjo_decisioning.adapters.tables import decisions, engagement_hours, profile_aliases
from support import Backend

ROWS = 3000


def rows_of(workspace_id: str) -> list[tuple[Any, list[dict[str, Any]]]]:
    logged = [{**row(i, {}, []), "workspace_id": workspace_id, "decision_point": f"p{i % 3}",
               "profile_id": f"person-{i // 3}", "request_id": f"r{i}"} for i in range(ROWS)]
    hours = [{"workspace_id": workspace_id, "profile_id": f"person-{i // 24}", "channel": 1,
              "hour": i % 24, "engagements": 1} for i in range(ROWS)]
    aliases = [{"workspace_id": workspace_id, "profile_id": f"m{i}",
                "survivor_profile_id": f"person-{i // 2}", "merge_time": NOW}
               for i in range(ROWS)]
    return [(decisions, logged), (engagement_hours, hours), (profile_aliases, aliases)]


async def test_a_new_workspaces_reads_by_key_are_probed_by_key(backend: Backend) -> None:
    async with log_server(backend) as server:
        db = server.db
        with db.transaction() as session:
            for table, rows in rows_of("acme"):
                session.execute(table.insert(), rows)
        if not db.is_sqlite:
            with db.transaction() as session:
                for table in ("decisions", "engagement_hours", "profile_aliases"):
                    session.execute(text(f"ANALYZE {table}"))
        with db.transaction() as session:  # the statistics know acme only
            for table, rows in rows_of("newcomer"):
                session.execute(table.insert(), rows)

        ws, people = "newcomer", [f"person-{i}" for i in range(5, 300, 7)]
        reads: list[tuple[str, str, Callable[[Session], object]]] = [
            ("decisions", "request_id",
             lambda s: log.replays(s, ws, "p1", [f"r{i}" for i in range(1, 900, 9)])),
            ("decisions", "profile_id",
             lambda s: log.contacts(s, ws, people, ["a"], NOW - timedelta(days=1))),
            ("decisions", "decision_id", lambda s: log.for_exposure(s, ws, ["d5", "d70"])),
            ("decisions", "profile_id", lambda s: outcomes.open_decisions(s, ws, people, {"p1"})),
            ("engagement_hours", "profile_id",
             lambda s: engagement.hour_counts(s, ws, people, 0)),
            ("engagement_hours", "profile_id",
             lambda s: engagement.hour_counts(s, ws, people, 1)),
            ("profile_aliases", "survivor_profile_id", lambda s: outcomes.people(s, ws, people)),
            ("profile_aliases", "profile_id",
             lambda s: outcomes.survivors(s, ws, ["m3", "m40", "m999"]))]
        filtered = [f"{statement}\n{plan}" for table, key, read in reads
                    for statement, plan in plans(db, read, f" {table} ")
                    if not probed_by(db, plan, key)]
        assert not filtered, "\n\n".join(filtered)

        # What the probes find is what the keys name.
        with db.transaction() as session:
            replayed = log.replays(session, ws, "p1", ["r1", "r4", "r2", "r9999", ""])
            assert sorted(replayed) == ["r1", "r4"]
            assert replayed["r4"]["decision_id"] == "d4"
            assert {(p, a) for p, a, _ in log.contacts(
                session, ws, ["person-1"], ["a"], NOW - timedelta(days=1))} == {
                ("person-1", "a")}
            assert sorted(log.for_exposure(session, ws, ["d5", "d70", "nope"])) == ["d5", "d70"]
            assert sorted(d.decision_id for d in outcomes.open_decisions(
                session, ws, ["person-1"], {"p1"})) == ["d4"]
            assert engagement.hour_counts(session, ws, ["person-0"], 1)["person-0"] == [1.0] * 24
            assert engagement.hour_counts(session, ws, ["person-0"], 2) == {}
            assert sorted(outcomes.people(session, ws, ["person-1"])["person-1"]) == [
                "m2", "m3", "person-1"]
            assert outcomes.survivors(session, ws, ["m3", "nope"]) == {"m3": "person-1"}
            assert outcomes.survivors(session, "acme", ["m3"]) == {"m3": "person-1"}
