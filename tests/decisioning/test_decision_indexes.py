"""The decision log's indexes: one keyed by person, and every per-person query reads through it.

Each index keyed by person takes a random key for every logged decision: on a log larger than
the page cache that is a page written per decision, and a second such index cost a fifth of
BatchDecide's CPU after 100,000 decisions (`make bench-decisioning`). The per-person queries
(rewards' open decisions, contact limits, ListDecisions by person) must still read only the
person's rows, on SQLite and PostgreSQL: each test runs the real storage function, captures
the statements it sends and asks the database for its plan of each.
"""

from __future__ import annotations

from datetime import timedelta

from decision_log_support import log_server
from query_plans import plans
from sqlalchemy import inspect, text
from test_decision_log_insert import CONTENTS, CONTEXT, NOW, row

from cjo_decisioning.adapters import decisions as log
from cjo_decisioning.adapters import outcomes
from support import Backend

ROWS = 4000  # enough that the planners prefer an index over a scan wherever one applies


def reads_by_person(plan: str) -> bool:
    return "ix_decisions_person" in plan and "SCAN decisions\n" not in plan + "\n" \
        and "Seq Scan on decisions" not in plan


async def test_one_index_is_keyed_by_person_and_the_per_person_queries_use_it(
        backend: Backend) -> None:
    async with log_server(backend) as server:
        db = server.db
        with db.transaction() as session:
            context, contents = log.fragment(CONTEXT), log.fragment(CONTENTS)
            for start in range(0, ROWS, 1000):
                log.insert(session, [row(i, context, contents)
                                     for i in range(start, start + 1000)])
            if not db.is_sqlite:
                session.execute(text("ANALYZE decisions"))

        with db.engine.connect() as connection:
            indexes = inspect(connection).get_indexes("decisions")
        by_person = sorted(i["name"] for i in indexes
                           if i["column_names"][:2] == ["workspace_id", "profile_id"])
        assert by_person == ["ix_decisions_person"]

        people = ["person-7", "person-1234"]
        for work in (
                lambda s: outcomes.open_decisions(s, "ws", people, {"p"}),
                lambda s: log.contacts(s, "ws", people, ["a"], NOW - timedelta(days=1)),
                lambda s: log.for_people(s, "ws", people, None, 10)):
            for _, plan in plans(db, work, "decisions"):
                assert reads_by_person(plan), plan
