"""Group commit of IngestEvents, through the real gRPC server on both backends: concurrent
single-event calls of a workspace are written in fewer transactions than calls, each call gets
its own answer (its profiles, duplicates across calls answered as the first, an event the
database refuses failing only in its own call), every event keeps its own call's trace, and two
workspaces never share a transaction. The settings the events are parsed with are cached, and
checked in the write transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from identity_support import START, Identity, Recorder, event, serve_identity
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.engine import Engine

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_settings_pb2 as settings_pb2
from cjo_platform.clock import ManualClock
from cjo_platform.rpc.status import field_violations
from support import Backend, eventually

# Wide, so that calls sent together meet in one group even on a loaded machine, and so that
# the workspace is still busy from the warm-up call when they come (a call to an idle
# workspace is written at once, alone: review rplan).
WINDOW_MS = "1000"
CALLS = 12


def trace(n: int) -> str:
    return f"00-{n:032x}-{n:016x}-01"


class IngestWrites:
    """Ingest's write transactions as committed: for each, the workspaces its statements named.
    One is known by what it reads: the events (earlier outcomes of its message ids) and the
    identity graph's edges."""

    def __init__(self, engine: Engine, workspaces: set[str]) -> None:
        self.engine = engine
        self.workspaces = workspaces
        self.committed: list[set[str]] = []
        sa_event.listen(engine, "before_cursor_execute", self._statement)
        sa_event.listen(engine, "commit", self._commit)
        sa_event.listen(engine, "rollback", self._forget)

    def close(self) -> None:
        sa_event.remove(self.engine, "before_cursor_execute", self._statement)
        sa_event.remove(self.engine, "commit", self._commit)
        sa_event.remove(self.engine, "rollback", self._forget)

    def _statement(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                   context: Any, executemany: bool) -> None:
        seen = conn.info.setdefault("ingest", {"tables": set(), "workspaces": set()})
        words = set(statement.replace(",", " ").replace("(", " ").replace(".", " ").split())
        seen["tables"].update({"edges", "events"} & words)
        seen["workspaces"].update(v for v in _values(parameters) if v in self.workspaces)

    def _commit(self, conn: Any) -> None:
        seen = conn.info.pop("ingest", None)
        if seen and seen["tables"] == {"edges", "events"}:
            self.committed.append(seen["workspaces"])

    def _forget(self, conn: Any) -> None:
        conn.info.pop("ingest", None)


def _values(parameters: Any) -> Iterator[str]:
    if isinstance(parameters, dict):
        yield from _values(list(parameters.values()))
    elif isinstance(parameters, (list, tuple)):
        for item in parameters:
            if isinstance(item, (dict, list, tuple)):
                yield from _values(item)
            elif isinstance(item, str):
                yield item


@pytest.fixture
async def grouping(backend: Backend, recorder: Recorder) -> AsyncIterator[Identity]:
    async with serve_identity(backend, recorder, ManualClock(START),
                              CJO_IDENTITY_GROUP_COMMIT_MS=WINDOW_MS) as running:
        yield running


@pytest.fixture
def writes(grouping: Identity) -> Iterator[IngestWrites]:
    counting = IngestWrites(grouping.app.db.engine, {"acme", "globex"})
    yield counting
    counting.close()


def refuse_poison(identity: Identity, backend: Backend) -> None:
    """The database refuses events whose message id starts with "poison" (a constraint the
    events pass parsing with, as a value the database cannot store would)."""
    with identity.app.db.transaction() as session:
        if backend.kind == "postgresql":
            session.execute(text("ALTER TABLE events ADD CONSTRAINT poison "
                                 "CHECK (message_id NOT LIKE 'poison%')"))
        else:
            session.execute(text(
                "CREATE TRIGGER poison BEFORE INSERT ON events "
                "WHEN NEW.message_id LIKE 'poison%' BEGIN SELECT RAISE(ABORT, 'poison'); END"))


async def ingest(identity: Identity, metadata: Any, *events: Any, traceparent: str = ""
                 ) -> pb.IngestEventsResponse:
    extra = (("traceparent", traceparent),) if traceparent else ()
    reply: pb.IngestEventsResponse = await identity.events.IngestEvents(
        pb.IngestEventsRequest(events=list(events)), metadata=(*metadata, *extra))
    return reply


async def test_concurrent_calls_share_transactions_and_each_gets_its_own_answer(
        grouping: Identity, writes: IngestWrites, recorder: Recorder) -> None:
    acme = await grouping.new_workspace("acme")
    # Settings cached by a first call (parsing a call must not need a transaction).
    await ingest(grouping, acme, event("warm", ("user_id", "u-warm")))
    writes.committed.clear()
    replies = await asyncio.gather(*(
        ingest(grouping, acme, event(f"m{i}", ("user_id", f"u{i % 4}")), traceparent=trace(i + 1))
        for i in range(CALLS)))
    assert all(r.results[0].status.code == 0 and not r.results[0].duplicate for r in replies)
    assert 1 <= len(writes.committed) < CALLS
    # Each call's own answer: the calls of one person got that person's profile, no other's.
    profile_of = {i: r.results[0].profile_id for i, r in enumerate(replies)}
    for i in range(CALLS):
        assert {j for j in range(CALLS) if profile_of[j] == profile_of[i]} == {
            j for j in range(CALLS) if j % 4 == i % 4}
    assert len({r.results[0].event_id for r in replies}) == CALLS
    # Each event forwarded once, in its own call's trace, with the id its call was told.
    await eventually(lambda: {f"m{i}" for i in range(CALLS)} <= {
        e.event.message_id for e in recorder.events})
    forwarded = [e for e in recorder.events if e.event.message_id != "warm"]
    assert len(forwarded) == CALLS
    for i, reply in enumerate(replies):
        [item] = [e for e in forwarded if e.event.message_id == f"m{i}"]
        assert item.event_id == reply.results[0].event_id
        assert item.profile_id == reply.results[0].profile_id
        assert item.traceparent.split("-")[1] == f"{i + 1:032x}"


async def test_a_lone_call_to_an_idle_workspace_waits_for_no_window(
        backend: Backend, recorder: Recorder) -> None:
    # A window of an hour: paid only by calls to a workspace written within it (a busy one).
    async with serve_identity(backend, recorder, ManualClock(START),
                              CJO_IDENTITY_GROUP_COMMIT_MS="3600000") as idle:
        acme = await idle.new_workspace("acme")
        reply = await asyncio.wait_for(
            ingest(idle, acme, event("lone", ("user_id", "u1"))), timeout=30)
        assert reply.results[0].status.code == 0 and reply.results[0].profile_id


async def test_a_message_id_sent_by_two_calls_of_a_group_is_applied_once(
        grouping: Identity, writes: IngestWrites) -> None:
    acme = await grouping.new_workspace("acme")
    await ingest(grouping, acme, event("warm", ("user_id", "u-warm")))
    writes.committed.clear()
    replies = await asyncio.gather(
        ingest(grouping, acme, event("same", ("user_id", "u1"))),
        ingest(grouping, acme, event("other", ("user_id", "u2"))),
        ingest(grouping, acme, event("same", ("user_id", "u1"))))
    first, second = replies[0].results[0], replies[2].results[0]
    assert len(writes.committed) == 1  # the three calls met in one transaction
    assert {first.duplicate, second.duplicate} == {False, True}
    assert first.event_id == second.event_id and first.profile_id == second.profile_id
    assert not replies[1].results[0].duplicate
    assert replies[1].results[0].event_id != first.event_id


async def test_an_event_the_database_refuses_fails_only_in_its_own_call(
        grouping: Identity, writes: IngestWrites, backend: Backend) -> None:
    acme = await grouping.new_workspace("acme")
    await ingest(grouping, acme, event("warm", ("user_id", "u-warm")))
    refuse_poison(grouping, backend)
    replies = await asyncio.gather(
        ingest(grouping, acme, event("a1", ("user_id", "u1"))),
        # First in its call: written again one by one, it meets the others' retries.
        ingest(grouping, acme, event("poison", ("user_id", "u3")),
               event("b2", ("user_id", "u2")), event("b3", ("user_id", "u3"))),
        ingest(grouping, acme, event("c1", ("user_id", "u1"))),
        ingest(grouping, acme, event("d1", ("loyalty_card", "42"))))
    assert [r.status.code for r in replies[0].results] == [0]
    assert [r.status.code for r in replies[1].results] == [3, 0, 0]
    assert "cannot be stored" in field_violations(replies[1].results[0].status)["events[0]"]
    assert [r.status.code for r in replies[2].results] == [0]
    # Refused when parsed: that call alone, as always.
    assert [r.status.code for r in replies[3].results] == [3]
    assert replies[0].results[0].profile_id == replies[2].results[0].profile_id
    stored = await stored_message_ids(grouping)
    assert {"a1", "b2", "b3", "c1"} <= stored and not {"poison", "d1"} & stored


async def stored_message_ids(identity: Identity) -> set[str]:
    def read() -> set[str]:
        with identity.app.db.transaction() as session:
            return set(session.execute(text("SELECT message_id FROM events")).scalars())
    return await identity.app.db.run(read)


async def test_two_workspaces_in_the_same_instant_never_share_a_transaction(
        grouping: Identity, writes: IngestWrites) -> None:
    acme = await grouping.new_workspace("acme")
    globex = await grouping.new_workspace("globex")
    for metadata in (acme, globex):
        await ingest(grouping, metadata, event("warm", ("user_id", "u-warm")))
    writes.committed.clear()
    replies = await asyncio.gather(*(
        ingest(grouping, metadata, event(f"m{i}", ("user_id", f"u{i}")))
        for i in range(CALLS // 2) for metadata in (acme, globex)))
    assert all(r.results[0].status.code == 0 for r in replies)
    assert all(len(w) == 1 for w in writes.committed)
    assert {"acme", "globex"} == set().union(*writes.committed)
    assert 2 <= len(writes.committed) < CALLS
    # The same message ids in two workspaces are two events each: nothing is a duplicate.
    assert len({r.results[0].event_id for r in replies}) == CALLS


async def replica_changes_settings(backend: Backend, recorder: Recorder, metadata: Any,
                                   settings: settings_pb2.IdentitySettings) -> None:
    """Another replica of identity on the same database changes the settings (this one does
    not hear of it)."""
    async with serve_identity(backend, recorder, ManualClock(START)) as other:
        await other.events.UpdateIdentitySettings(
            pb.UpdateIdentitySettingsRequest(settings=settings), metadata=metadata)


async def test_settings_changed_elsewhere_hold_from_the_next_write_although_cached(
        grouping: Identity, backend: Backend, recorder: Recorder) -> None:
    """The cached settings are checked in the write transaction: what the new settings refuse
    is refused at once, never accepted on the old ones."""
    acme = await grouping.new_workspace("acme")
    first = await ingest(grouping, acme, event("m0", ("user_id", "u0")))  # settings cached
    assert first.results[0].status.code == 0
    await replica_changes_settings(backend, recorder, acme, settings_pb2.IdentitySettings(
        identifier_types=[settings_pb2.IdentifierTypeRule(
            type="user_id", limit=1, blocked_values=["blocked-.*"])]))
    reply = await ingest(grouping, acme, event("m1", ("user_id", "blocked-1")))
    assert reply.results[0].status.code == 3
    assert any(f.endswith("identifiers") for f in field_violations(reply.results[0].status))


async def test_an_event_refused_on_cached_settings_is_parsed_again_on_the_stored_ones(
        grouping: Identity, backend: Backend, recorder: Recorder) -> None:
    acme = await grouping.new_workspace("acme")
    await ingest(grouping, acme, event("m0", ("user_id", "u0")))  # settings cached
    # A national phone number needs a default region to be understood.
    await replica_changes_settings(backend, recorder, acme,
                                   settings_pb2.IdentitySettings(default_phone_region="FR"))
    reply = await ingest(grouping, acme, event("m1", ("phone", "06 12 34 56 78")))
    assert reply.results[0].status.code == 0
    profile = await grouping.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{reply.results[0].profile_id}"), metadata=acme)
    assert [(i.type, i.value) for i in profile.profile.identifiers] == [
        ("phone", "+33612345678")]
