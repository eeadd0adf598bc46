"""Reading journeys and their versions finds each version by primary key, on SQLite and
PostgreSQL, and tells a draft that differs from its latest version without decoding versions
whose stored text is the draft's.

A row-value ``(workspace_id, journey_id, version) IN (...)`` of two keys or more made SQLite scan
every workspace's versions: a journey list (whether each draft is published) and every round of
the event worker (the graphs of the enrollments its events reach) cost a pass over all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import query_plans
from orchestration_support import migrated_database
from sqlalchemy import text, update

from cjo_orchestration.adapters import journeys as store
from cjo_orchestration.adapters.tables import journey_versions
from cjo_orchestration.domain.journeys import (
    EventTrigger,
    ExitAction,
    Journey,
    JourneyGraph,
    JourneyState,
    JourneyVersion,
    Node,
)
from cjo_platform.db import Database
from support import Backend

NOW = datetime(2026, 3, 1, tzinfo=UTC)
JOURNEYS = 400  # per workspace: enough that the planners prefer an index over a scan


def _graph(event: str) -> JourneyGraph:
    return JourneyGraph(trigger=EventTrigger(event), nodes=(Node("done", ExitAction()),),
                        entry_node_id="done")


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    database = migrated_database(backend)
    with database.transaction() as session:
        for ws in ("ws0", "ws1"):
            for i in range(JOURNEYS):
                jid = f"j{i:04d}"
                store.insert(session, Journey(ws, jid, jid, JourneyState.ACTIVE, _graph("b"),
                                              3, 4, NOW + timedelta(seconds=i), NOW))
                for version in (1, 2, 3):
                    store.add_version(session, JourneyVersion(
                        ws, jid, version, _graph("a" if version < 3 else "b"), NOW))
        if not database.is_sqlite:
            session.execute(text("ANALYZE journeys"))
            session.execute(text("ANALYZE journey_versions"))
    yield database
    database.dispose()


def test_versions_are_found_by_primary_key(db: Database) -> None:
    # What the event worker reads every round, and a list for its differing drafts.
    keys = [("ws0", "j0001", 3), ("ws0", "j0002", 2), ("ws1", "j0003", 1)]
    found = query_plans.plans(db, lambda s: store.versions(s, keys), "journey_versions")
    for statement, plan in found:
        assert "SCAN journey_versions" not in plan, (statement, plan)
        assert query_plans.probed_by(db, plan, "journey_id"), (statement, plan)
    with db.transaction() as session:
        assert sorted(store.versions(session, keys)) == sorted(keys)


def test_versions_of_many_journeys_are_read_in_one_statement(db: Database) -> None:
    """Review rorchfix3: the event worker reads the versions of every active enrollment of a
    round's profiles (500 events, any number of journeys each); an OR of a condition per key
    failed on SQLite past ~1,000 keys ("Expression tree is too large") and its events went to
    the dead letters, and PostgreSQL spent seconds planning it."""
    keys = [(ws, f"j{i:04d}", version) for ws in ("ws0", "ws1") for i in range(JOURNEYS)
            for version in (1, 3)]  # 1,600 keys of 800 journeys
    absent = [("ws2", f"j{i:04d}", 1) for i in range(600)]  # 1,400 journeys in all
    found = query_plans.plans(db, lambda s: store.versions(s, [*keys, *absent]),
                              "journey_versions")
    assert len(found) == 1
    [(statement, plan)] = found
    assert "SCAN journey_versions" not in plan, (statement, plan)
    with db.transaction() as session:
        graphs = store.versions(session, [*keys, ("ws0", "gone", 1)])
    assert sorted(graphs) == sorted(keys)
    assert graphs[("ws1", "j0007", 3)] == _graph("b") and graphs[("ws0", "j0007", 1)] == _graph("a")


def test_a_page_of_journeys_finds_each_latest_version_by_primary_key(db: Database) -> None:
    found = query_plans.plans(db, lambda s: store.page(s, "ws0", 100, None), "journey_versions")
    for statement, plan in found:
        assert "SCAN journey_versions" not in plan, (statement, plan)
        assert query_plans.probed_by(db, plan, "journey_id"), (statement, plan)


def test_a_version_stored_otherwise_is_compared_as_a_graph(db: Database) -> None:
    with db.transaction() as session:
        # j0001's latest version as an older release might have written it (keys in another
        # order): the same graph, other text. j0002's holds another graph.
        v = journey_versions.c
        same = _graph("b").to_dict()
        session.execute(update(journey_versions).where(
            v.workspace_id == "ws0", v.journey_id == "j0001", v.version == 3).values(
            definition=dict(reversed(list(same.items())))))
        session.execute(update(journey_versions).where(
            v.workspace_id == "ws0", v.journey_id == "j0002", v.version == 3).values(
            definition=_graph("c").to_dict()))
        listed = {j.journey_id: j.unpublished_changes
                  for j in store.page(session, "ws0", 4, None)}
        assert listed == {"j0000": False, "j0001": False, "j0002": True, "j0003": False}
        assert not store.read(session, "ws0", "j0001").unpublished_changes
        assert store.read(session, "ws0", "j0002").unpublished_changes
