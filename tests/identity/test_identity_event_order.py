"""The order guarantee the outbox docs state: identity's events of one profile reach the outbox
(and so orchestration) in commit order, because a batch locks the profile's row before it writes
the profile's events. (Across profiles there is no such guarantee, and none is claimed.)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from identity_support import START
from sqlalchemy import select, text

from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo_identity.adapters.outbox_payloads import EVENTS_TOPIC
from cjo_identity.adapters.tables import metadata, outbox, request_log
from cjo_identity.domain.events import EventType, parse_event
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer import ingest
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions
from support import Backend, eventually

WS = "acme"


@pytest.fixture
def tx(backend: Backend) -> Iterator[Transactions]:
    if backend.kind != "postgresql":
        pytest.skip("SQLite serializes every write: id order is commit order there")
    db = Database(backend.env()["CJO_DATABASE_URL"], schema=backend.schema_prefix + "identity")
    db.create_schema()
    metadata.create_all(db.engine)
    clock = ManualClock(START)
    yield Transactions(db, clock, Outbox(outbox, clock), RequestLog(request_log, clock))
    db.dispose()


def track(message_id: str) -> Any:
    return parse_event(message_id=message_id, event_type=EventType.TRACK, name="page_viewed",
                       identifiers=(("user_id", "u1"),), properties={}, traits={},
                       timestamp=START, source="web", now=START)


async def test_a_profiles_events_enter_the_outbox_in_commit_order(
        tx: Transactions, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = IdentitySettings()
    await ingest.ingest_events(tx, WS, [track("m0")], settings, "")
    real = ingest.profiles.golden_for_update
    locked, release = threading.Event(), threading.Event()
    first = True
    holder: list[int] = []

    def held_after_locking(session: Any, workspace_id: str, profile_ids: set[str]) -> Any:
        nonlocal first
        found = real(session, workspace_id, profile_ids)
        if first:  # the first batch holds the profile's lock until released
            first = False
            holder.append(int(session.execute(text("SELECT pg_backend_pid()")).scalar_one()))
            locked.set()
            release.wait(30)
        return found

    monkeypatch.setattr(ingest.profiles, "golden_for_update", held_after_locking)
    older = asyncio.create_task(ingest.ingest_events(tx, WS, [track("m1")], settings, ""))
    await eventually(locked.is_set)
    newer = asyncio.create_task(ingest.ingest_events(tx, WS, [track("m2")], settings, ""))

    def newer_waits_for_the_lock() -> bool:
        with tx.db.engine.connect() as connection:
            return bool(connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))"
            ), {"holder": holder[0]}).scalar())

    await eventually(newer_waits_for_the_lock)
    release.set()
    (m1,), (m2,) = await older, await newer
    rows = tx.run_sync(lambda uow: list(uow.session.execute(
        select(outbox.c.payload).where(outbox.c.topic == EVENTS_TOPIC)
        .order_by(outbox.c.id)).scalars()))
    ids = [orchestration_pb.ForwardedEvent.FromString(p).event_id for p in rows]
    # m1 locked first and committed first; m2 waited for it, so its row has the higher id.
    assert ids[1:] == [m1.event_id, m2.event_id]  # type: ignore[union-attr]
