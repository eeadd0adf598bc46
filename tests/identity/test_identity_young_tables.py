"""A new workspace's second batch in a new database: the look-up of the batch's identifiers
probes each one by the primary key, not every identifier of the workspace per key (the plan
PostgreSQL made for tables that had no statistics yet, until autovacuum's first pass: 2.3 s
for a 1,000-event batch instead of a few ms)."""

from __future__ import annotations

from identity_support import Identity
from query_plans import plans

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters import profiles
from cjo_identity.domain.identifiers import Identifier
from cjo_platform.protobuf import dict_to_struct
from support import as_service

BATCH = 1000


def visits(run: str) -> list[event_pb2.Event]:
    return [event_pb2.Event(
        message_id=f"{run}-{i}", type=event_pb2.EVENT_TYPE_TRACK, name="page_viewed",
        identifiers=[event_pb2.Identifier(type="user_id", value=f"{run}-u{i}")],
        properties=dict_to_struct({"path": f"/p/{i % 50}"}), source="web")
        for i in range(BATCH)]


async def test_the_second_batchs_owners_are_probed_by_the_primary_key(
        identity: Identity) -> None:
    metadata = as_service("acme")
    reply = await identity.events.IngestEvents(
        pb.IngestEventsRequest(events=visits("first")), metadata=metadata)
    assert all(r.event_id for r in reply.results)
    wanted = {Identifier("user_id", f"second-u{i}") for i in range(BATCH)}
    found = plans(identity.app.db,
                  lambda session: profiles.erased_and_owners(session, "acme", wanted),
                  "identifiers")
    for _, plan in found:
        if identity.app.db.is_sqlite:
            assert "SCAN t" not in plan, plan
        else:
            assert "identifiers_pkey" in plan and "ix_identifiers_cluster" not in plan, plan
