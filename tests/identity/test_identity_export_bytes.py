"""Review rexport: an export page is bounded by bytes only (1,001 small events exported in one
answer at 74dadca, 1,000 of them at 486669c: a client not following page tokens got a
truncated data-subject export); a merge between two pages of an export is ABORTED rather than
leaving out the merged-in events newer than the cursor; a page of events is one query."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from identity_support import START, EmptyDecisioning, backend_transactions, cli_profile_export
from sqlalchemy import event as sa_event

from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dc_grpc
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_service_pb2_grpc as pb_grpc
from cjo_identity.domain.events import Event, EventType, parse_event
from cjo_identity.domain.ingest import Outcome
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer import ingest, profiles
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import Aborted
from cjo_platform.paging import MAX_PAGE_BYTES
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
    return tx.run_sync(lambda uow: profiles.export_profile(uow, WS, profile_id, cursor,
                                                           max_bytes))


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
