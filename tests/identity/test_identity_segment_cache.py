"""A process keeps a workspace's active segments and reads them again only when their revision
moved: a segment created, changed or deleted on one replica is what the other replica's next
ingest transaction evaluates, and an unchanged workspace costs no read of its segments."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from identity_support import START
from sqlalchemy import event as sa_event
from sqlalchemy import update

from cjo_identity.adapters import segments as stored_segments
from cjo_identity.adapters import tables as stored_tables
from cjo_identity.adapters.tables import metadata, outbox, request_log
from cjo_identity.domain.events import EventType, parse_event
from cjo_identity.domain.ingest import Outcome
from cjo_identity.domain.segments import SegmentChanges, SegmentState
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer import ingest, segments
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.revision_cache import MAX_AGE_SECONDS, RevisionCache
from cjo_platform.secret_box import SecretBox
from support import PG_URL, Backend

WS = "acme"
BOX = SecretBox([])
SEGMENTS_READ = "SELECT segments.workspace_id, segments.segment_id"


@pytest.fixture
def replicas(backend: Backend) -> Iterator[tuple[Transactions, Transactions]]:
    """Two replicas of identity on one database: two Database objects (pools, processes)."""
    if backend.kind == "postgresql":
        url = PG_URL
        schema: str | None = backend.schema_prefix + "identity"
    else:
        backend.data_dir.mkdir(parents=True, exist_ok=True)
        url, schema = f"sqlite:///{backend.data_dir}/identity.db", None
    dbs = [Database(url, schema=schema) for _ in range(2)]
    if schema is not None:
        dbs[0].create_schema()
    metadata.create_all(dbs[0].engine)
    clock = ManualClock(START)
    try:
        yield tuple(  # type: ignore[misc]
            Transactions(db, clock, Outbox(outbox, clock), RequestLog(request_log, clock))
            for db in dbs)
    finally:
        if schema is not None:
            dbs[0].drop_schema()
        for db in dbs:
            db.engine.dispose()


def person(message_id: str, plan: str) -> Any:
    return parse_event(message_id=message_id, event_type=EventType.IDENTIFY, name="",
                       identifiers=(("user_id", message_id),), properties={},
                       traits={"plan": plan}, timestamp=START, source="web", now=START)


class Reads:
    """The reads of the segments' definitions on one replica's database."""

    def __init__(self, tx: Transactions) -> None:
        self.count = 0
        sa_event.listen(tx.db.engine, "before_cursor_execute", self._statement)

    def _statement(self, conn: object, cursor: object, statement: str, *rest: object) -> None:
        self.count += " ".join(statement.split()).startswith(SEGMENTS_READ)


async def members_after(tx: Transactions, message_id: str, plan: str) -> list[str]:
    """The segments a new person with ``plan`` enters, ingested on ``tx``'s replica as the
    servicer ingests (settings checked in the write transaction)."""
    [outcome] = await ingest.ingest_events(tx, WS, [person(message_id, plan)],
                                           IdentitySettings(), "", check_settings=BOX)
    assert isinstance(outcome, Outcome)
    held = tx.run_sync(lambda uow: stored_segments.memberships(
        uow.session, WS, [outcome.profile_id]))
    return sorted(held.get(outcome.profile_id, ()))


async def test_a_segment_written_on_one_replica_is_evaluated_by_the_others_next_batch(
        replicas: tuple[Transactions, Transactions]) -> None:
    a, b = replicas
    reads = Reads(a)
    await b.run(lambda uow: segments.create_segment(uow, WS, "pros", "", 'traits.plan == "pro"'))
    assert await members_after(a, "m1", "pro") == ["pros"]
    assert await members_after(a, "m2", "pro") == ["pros"]
    assert reads.count == 1  # read once, then kept: the revision did not move

    # Changed on the other replica: the next batch here evaluates the new condition.
    await b.run(lambda uow: segments.update_segment(
        uow, WS, "pros", SegmentChanges(condition='traits.plan == "team"'),
        frozenset({"condition"}), ""))
    assert await members_after(a, "m3", "pro") == []
    assert await members_after(a, "m4", "team") == ["pros"]
    assert reads.count == 2

    # Created and deleted there: seen here at once as well.
    await b.run(lambda uow: segments.create_segment(uow, WS, "all", "", "true"))
    assert await members_after(a, "m5", "team") == ["all", "pros"]
    await b.run(lambda uow: segments.delete_segment(uow, WS, "pros", ""))
    assert await members_after(a, "m6", "team") == ["all"]
    assert reads.count == 4


async def test_a_success_after_an_error_resets_the_kept_segments_error_run(
        replicas: tuple[Transactions, Transactions]) -> None:
    a, _ = replicas
    await a.run(lambda uow: segments.create_segment(uow, WS, "big", "", "int(traits.plan) > 1"))

    def run_of_errors() -> int:
        found, _ = a.run_sync(lambda uow: segments.get_segment(uow, WS, "big"))
        return found.consecutive_errors

    assert await members_after(a, "m1", "free") == []  # "free" is no number: an error
    assert run_of_errors() == 1
    # The error moved the revision: the next batch knows of the run it ends.
    await ingest.ingest_events(a, WS, [parse_event(
        message_id="m2", event_type=EventType.IDENTIFY, name="", identifiers=(("user_id", "m2"),),
        properties={}, traits={"plan": 2}, timestamp=START, source="web", now=START)],
        IdentitySettings(), "", check_settings=BOX)
    assert run_of_errors() == 0


async def test_a_segment_changed_without_moving_the_revision_is_seen_within_the_bound(
        replicas: tuple[Transactions, Transactions], monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that does not move the revision (a replica still on the code from before it, a
    restore, a fix in SQL) is evaluated once the kept list is MAX_AGE_SECONDS old, not never."""
    a, b = replicas
    now = [1000.0]
    monkeypatch.setitem(stored_segments._kept, a.db.engine, RevisionCache(monotonic=lambda: now[0]))
    await b.run(lambda uow: segments.create_segment(uow, WS, "pros", "", 'traits.plan == "pro"'))
    assert await members_after(a, "m1", "pro") == ["pros"]
    # Made invalid behind the revision's back.
    b.run_sync(lambda uow: uow.session.execute(
        update(stored_tables.segments).where(stored_tables.segments.c.segment_id == "pros")
        .values(state=SegmentState.INVALID.value)))
    assert await members_after(a, "m2", "pro") == ["pros"]  # kept: the revision did not move
    now[0] += MAX_AGE_SECONDS
    assert await members_after(a, "m3", "pro") == []
