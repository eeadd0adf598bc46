"""Review rexport: an export page is bounded by bytes only (1,001 small events exported in one
answer at 74dadca, 1,000 of them at 486669c: a client not following page tokens got a
truncated data-subject export); a merge between two pages of an export is ABORTED rather than
leaving out the merged-in events newer than the cursor; a page of events is one query.

Review rexport2: ExportProfile reads on the read path (at e284688 it ran as a write: on SQLite
the single writer thread, where another profile's ingest waited 11.2 s behind a 40,000-event
export) and reads about what it answers (events are measured as the servicer encodes them:
e284688 read until an estimate of 128 bytes beyond the JSON columns per event reached the
bound, ~426 bytes encoded, and dropped the rest); an identifier moving events into the
profile between two pages is ABORTED (the marker of profile and merge count did not change,
and the moved-in events newer than the cursor were left out); a page token of an earlier
release starts the export again (ABORTED) rather than failing (INVALID_ARGUMENT)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from identity_support import (
    START,
    EmptyDecisioning,
    Identity,
    backend_transactions,
    cli_profile_export,
    event,
    rpc_error,
)
from identity_support import ingest as ingest_rpc
from sqlalchemy import event as sa_event

from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dc_grpc
from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_service_pb2_grpc as pb_grpc
from cjo_identity.api import identity_servicer
from cjo_identity.domain.events import Event, EventType, StoredEvent, parse_event
from cjo_identity.domain.ingest import Outcome
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer import ingest, profiles
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import Aborted
from cjo_platform.paging import MAX_PAGE_BYTES, encode_token
from support import Backend

WS = "acme"
REPO = Path(__file__).resolve().parents[2]
HOUR = timedelta(hours=1)


@pytest.fixture
def tx(backend: Backend) -> Iterator[Transactions]:
    with backend_transactions(backend) as transactions:
        yield transactions


def track(message_id: str, *identifiers: tuple[str, str], at: timedelta) -> Event:
    return parse_event(message_id=message_id, event_type=EventType.TRACK, name="page_viewed",
                       identifiers=identifiers, properties={"path": f"/p/{message_id}"},
                       traits={}, timestamp=START + at, source="web", now=START)


async def ingest_ok(tx: Transactions, *events: Event) -> list[Outcome]:
    outcomes = await ingest.ingest_events(tx, WS, events, IdentitySettings(), "")
    assert all(isinstance(o, Outcome) for o in outcomes), outcomes
    return [o for o in outcomes if isinstance(o, Outcome)]


def export_page(tx: Transactions, profile_id: str, cursor: Any, max_bytes: int) -> Any:
    return tx.read_sync(lambda uow: profiles.export_profile(
        uow, WS, profile_id, cursor, max_bytes, lambda _p: 0, lambda _e: 1))


def export_all(tx: Transactions, profile_id: str, max_bytes: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        _, page, cursor = export_page(tx, profile_id, cursor, max_bytes)
        ids += [e.event.message_id for e in page]
        if cursor is None:
            return ids


async def test_an_export_of_1001_small_events_is_one_page(tx: Transactions) -> None:
    for start in range(0, 1001, 250):
        outcomes = await ingest_ok(tx, *(track(f"m{i}", ("user_id", "u1"), at=i * HOUR)
                                         for i in range(start, min(1001, start + 250))))
    profile_id = outcomes[0].profile_id
    _, page, more = export_page(tx, profile_id, None, MAX_PAGE_BYTES)
    assert more is None
    assert [e.event.message_id for e in page] == [f"m{i}" for i in reversed(range(1001))]


async def test_a_merge_between_export_pages_aborts_and_the_export_again_is_whole(
        tx: Transactions) -> None:
    (a, *_) = await ingest_ok(tx, *(track(f"m{i}", ("user_id", "u1"), at=i * HOUR)
                                    for i in (1, 3, 5, 6)))
    (b, _) = await ingest_ok(tx, track("m2", ("anonymous_id", "a1"), at=2 * HOUR),
                             track("m55", ("anonymous_id", "a1"), at=5.5 * HOUR))
    assert b.profile_id != a.profile_id
    _, first, cursor = export_page(tx, a.profile_id, None, 1)  # one event a page
    assert [e.event.message_id for e in first] == ["m6"]
    # Another request merges b into a between the export's pages; m55, older than m6 and
    # newer than the cursor, was never exported.
    await ingest_ok(tx, track("m7", ("user_id", "u1"), ("anonymous_id", "a1"), at=7 * HOUR))
    with pytest.raises(Aborted, match="profile changed during export; start again"):
        export_page(tx, a.profile_id, cursor, 1)
    assert export_all(tx, a.profile_id, 1) == ["m7", "m6", "m55", "m5", "m3", "m2", "m1"]
    assert export_all(tx, b.profile_id, MAX_PAGE_BYTES) == [
        "m7", "m6", "m55", "m5", "m3", "m2", "m1"]


async def test_a_page_of_100_events_is_one_query_of_the_events(tx: Transactions) -> None:
    outcomes = await ingest_ok(tx, *(track(f"m{i}", ("user_id", "u1"), at=i * HOUR)
                                     for i in range(150)))
    profile_id = outcomes[0].profile_id
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        if " events" in statement.lower().split(" where ")[0]:
            statements.append(statement)

    engine = tx.db.engine
    sa_event.listen(engine, "before_cursor_execute", seen)
    try:
        page, more = tx.run_sync(lambda uow: profiles.list_profile_events(
            uow, WS, profile_id, 100, None))
    finally:
        sa_event.remove(engine, "before_cursor_execute", seen)
    assert [e.event.message_id for e in page] == [f"m{i}" for i in range(149, 49, -1)]
    assert more is not None
    assert len(statements) == 1, statements


class MergedMidExport(pb_grpc.IdentityServiceServicer):
    """Identity whose profile is merged between the first export's two pages (the second page
    is ABORTED)."""

    def __init__(self) -> None:
        self.aborted = 0

    async def ExportProfile(self, request: pb.ExportProfileRequest,
                            context: grpc.aio.ServicerContext) -> pb.ExportProfileResponse:
        if not request.page_token:
            return pb.ExportProfileResponse(json=json.dumps(
                {"events": [{"eventId": "e2"}], "profile": {"name": "profiles/p1"}}),
                next_page_token="older")
        if not self.aborted:
            self.aborted += 1
            await context.abort(grpc.StatusCode.ABORTED,
                                "profile changed during export; start again")
        return pb.ExportProfileResponse(json=json.dumps({"events": [{"eventId": "e1"}]}))


async def test_cjo_profile_export_starts_again_when_the_profile_changed(tmp_path: Path) -> None:
    fake = MergedMidExport()
    server = grpc.aio.server()
    pb_grpc.add_IdentityServiceServicer_to_server(fake, server)
    dc_grpc.add_DecisioningServiceServicer_to_server(EmptyDecisioning(), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        done = await cli_profile_export("profiles/p1", "key", address, address,
                                        tmp_path / "config")
    finally:
        await server.stop(None)
    assert done.returncode == 0, done.stderr[-2000:]
    assert fake.aborted == 1
    document = json.loads(done.stdout)
    assert [e["eventId"] for e in document["events"]] == ["e2", "e1"]  # each once
    assert document["profile"] == {"name": "profiles/p1"}


@pytest.mark.parametrize("received_later", [False, True])
async def test_an_identifier_move_between_export_pages_aborts(
        tx: Transactions, received_later: bool) -> None:
    (p1, _) = await ingest_ok(tx, track("m1", ("user_id", "u1"), at=1 * HOUR),
                              track("m10", ("user_id", "u1"), at=10 * HOUR))
    if received_later:  # the moving events received after the profile's last (review rexport3)
        tx.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    (p2, a) = await ingest_ok(tx, track("m6", ("user_id", "u2"), ("anonymous_id", "a1"),
                                        at=6 * HOUR),
                              track("m12", ("anonymous_id", "a1"), at=12 * HOUR))
    assert p2.profile_id != p1.profile_id and a.profile_id == p2.profile_id
    if received_later:
        tx.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    _, first, cursor = export_page(tx, p1.profile_id, None, 1)  # one event a page
    assert [e.event.message_id for e in first] == ["m10"]
    # A late event dated before m6: a1 was u1's first, so a1 (and m12, newer than the cursor)
    # moves to u1's profile, which merged nothing.
    await ingest_ok(tx, track("m0", ("user_id", "u1"), ("anonymous_id", "a1"), at=-24 * HOUR))
    assert "m12" in export_all(tx, p1.profile_id, MAX_PAGE_BYTES)
    with pytest.raises(Aborted, match="profile changed during export; start again"):
        while cursor is not None:
            _, _, cursor = export_page(tx, p1.profile_id, cursor, 1)
    assert export_all(tx, p1.profile_id, 1) == ["m12", "m10", "m1", "m0"]


async def test_events_received_during_an_export_do_not_abort_it(tx: Transactions) -> None:
    (p1, *_) = await ingest_ok(tx, *(track(f"m{i}", ("user_id", "u1"), at=i * HOUR)
                                     for i in range(3)))
    _, first, cursor = export_page(tx, p1.profile_id, None, 1)
    tx.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    await ingest_ok(tx, track("m9", ("user_id", "u1"), at=9 * HOUR))
    ids = [e.event.message_id for e in first]
    while cursor is not None:
        _, page, cursor = export_page(tx, p1.profile_id, cursor, 1)
        ids += [e.event.message_id for e in page]
    assert ids == ["m2", "m1", "m0"]


async def test_the_export_reads_on_the_read_path_and_sends_all_it_encodes(
        identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    metadata = await identity.new_workspace(WS)
    for batch in range(4):
        results = await ingest_rpc(identity, metadata, *(
            event(f"m{n}", ("user_id", "u1"), at=START - (200 - n) * timedelta(minutes=1))
            for n in range(batch * 50, batch * 50 + 50)))
        assert [r.status.code for r in results] == [0] * 50
    name = (await identity.events.LookupProfile(pb.LookupProfileRequest(
        identifier=event_pb2.Identifier(type="user_id", value="u1")),
        metadata=metadata)).profile.name
    writing = threading.local()
    run_sync = Transactions.run_sync

    def as_writer(self: Transactions, work: Any, **options: Any) -> Any:
        writing.on = True
        try:
            return run_sync(self, work, **options)
        finally:
            writing.on = False

    real_export = profiles.export_profile
    in_writer: list[bool] = []

    def export(uow: Any, *args: Any, **options: Any) -> Any:
        in_writer.append(getattr(writing, "on", False))
        return real_export(uow, *args, **options)

    encoded: list[str] = []
    to_proto = identity_servicer.stored_event_to_proto

    def encode(stored: StoredEvent) -> Any:
        encoded.append(stored.event.message_id)
        return to_proto(stored)

    monkeypatch.setattr(Transactions, "run_sync", as_writer)
    monkeypatch.setattr(profiles, "export_profile", export)
    monkeypatch.setattr(identity_servicer, "stored_event_to_proto", encode)
    monkeypatch.setattr(identity_servicer, "MAX_PAGE_BYTES", 20_000)  # ~40 events a page
    sent: list[str] = []
    pages = 0
    token = ""
    while True:
        encoded.clear()
        exported = await identity.events.ExportProfile(pb.ExportProfileRequest(
            name=name, page_token=token), metadata=metadata)
        assert len(exported.json) <= 20_000
        page = [e["event"]["messageId"] for e in json.loads(exported.json)["events"]]
        # Every event read and encoded is sent, but one looked at past the page.
        assert len(encoded) - len(page) <= 1, (len(encoded), len(page))
        sent += page
        pages += 1
        token = exported.next_page_token
        if not token:
            break
    assert sent == [f"m{i}" for i in reversed(range(200))] and pages > 4
    assert in_writer and not any(in_writer), in_writer


async def test_a_page_token_of_an_earlier_release_starts_the_export_again(
        identity: Identity) -> None:
    metadata = await identity.new_workspace(WS)
    await ingest_rpc(identity, metadata, event("m1", ("user_id", "u1"), at=START))
    name = (await identity.events.LookupProfile(pb.LookupProfileRequest(
        identifier=event_pb2.Identifier(type="user_id", value="u1")),
        metadata=metadata)).profile.name
    old = encode_token({"t": datetime(2026, 3, 1, tzinfo=UTC).isoformat(), "id": "e1"})
    error = await rpc_error(identity.events.ExportProfile(pb.ExportProfileRequest(
        name=name, page_token=old), metadata=metadata))
    assert error.code() == grpc.StatusCode.ABORTED, error.details()
    bad = encode_token({"t": datetime(2026, 3, 1, tzinfo=UTC).isoformat(), "id": "e1",
                        "p": "x", "m": 0, "s": "then", "n": 1})
    error = await rpc_error(identity.events.ExportProfile(pb.ExportProfileRequest(
        name=name, page_token=bad), metadata=metadata))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()

