"""A known edge whose first event moves earlier while its cluster is recomputed in the same batch
(review ribatch): it was stored twice, the batch refused whole on the edges' unique key, on both
databases, every retry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from identity_support import START
from sqlalchemy import func, select

from cjo_identity.adapters.tables import edges, metadata, outbox, request_log
from cjo_identity.domain.events import EventType, parse_event
from cjo_identity.domain.ingest import Outcome
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer import ingest
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

WS = "acme"


@pytest.fixture
def tx(backend: Backend) -> Iterator[Transactions]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/identity.db")
    db = Database(url, schema=backend.schema_prefix + "identity")
    db.create_schema()
    metadata.create_all(db.engine)
    clock = ManualClock(START)
    yield Transactions(db, clock, Outbox(outbox, clock), RequestLog(request_log, clock))
    db.dispose()


def event(message_id: str, identifiers: list[tuple[str, str]], seconds: float,
          kind: EventType = EventType.TRACK, traits: dict[str, object] | None = None) -> object:
    return parse_event(message_id=message_id, event_type=kind,
                       name="page_viewed" if kind is EventType.TRACK else "",
                       identifiers=identifiers, properties={"p": 1}, traits=traits or {},
                       timestamp=START + timedelta(seconds=seconds), source="web", now=START)


async def test_an_earlier_first_event_of_a_known_edge_in_a_recomputed_cluster(
        tx: Transactions) -> None:
    settings = IdentitySettings()
    first = [event("r394", [("device_id", "d15")], 66.9, EventType.IDENTIFY),
             event("r453", [("device_id", "d15"), ("user_id", "u13"), ("email", "e34@x.com"),
                            ("email", "nope")], -347, traits={"name": 1}),
             event("r454", [("device_id", "d10")], 0)]
    # d15's lone edge gets an earlier first event while d10's cluster (joined by r636) is
    # recomputed with it.
    second = [event("r602", [("device_id", "d15")], 0, EventType.IDENTIFY),
              event("r633", [("email", "e2@x.com"), ("anonymous_id", "a58"),
                             ("email", "nope")], 1, EventType.IDENTIFY),
              event("r636", [("device_id", "d10"), ("user_id", "u33"), ("email", "e2@x.com")],
                    0)]
    for batch in (first, second):
        tx.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
        outcomes = await ingest.ingest_events(tx, WS, batch, settings, "")
        assert all(isinstance(o, Outcome) and o.profile_id for o in outcomes), outcomes
    with tx.db.transaction() as session:
        keys = session.execute(select(edges.c.edge_key, func.count()).group_by(
            edges.c.edge_key)).all()
    assert keys and all(count == 1 for _, count in keys)
