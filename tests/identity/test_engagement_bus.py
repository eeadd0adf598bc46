"""Delivery's engagement events reaching identity through the event bus (CJO_EVENT_BUS) against
the real NATS JetStream at 127.0.0.1:4222: the rows delivery's forwarder publishes
(identity.events) are taken by identity's own consumer into IngestEvents, so an open lands on
the person's profile once however often it is re-sent, and an event IngestEvents refuses goes
to identity's dead letters while the rest flow. The test uses a stream prefix of its own and
removes its streams afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from identity_support import Recorder, event, serve_identity
from nats_support import NATS_URL, SenderOutbox, bus_env, drain, drop_streams, nats_listening
from sqlalchemy import select

from cjo.common.v1 import dead_letter_service_pb2 as dl_pb
from cjo_delivery.adapters.engagement_store import IDENTITY_EVENTS_TOPIC
from cjo_delivery.adapters.identity_events import identity_events_forwarder
from cjo_identity.adapters.tables import events, metadata
from cjo_platform.bus import Bus, BusSettings
from cjo_platform.clock import ManualClock
from support import Backend, as_service, eventually, settings_for

pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")

# Identity's own topics go to the bus too once it is set.
TOPICS = (IDENTITY_EVENTS_TOPIC, "orchestration.events", "analytics.facts",
          "decisioning.events")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await drop_streams(name, TOPICS)


async def test_an_email_open_reaches_identity_through_jetstream_once(
        sqlite_backend: Backend, recorder: Recorder, prefix: str, tmp_path: Path) -> None:
    box = SenderOutbox(tmp_path / "delivery.db", "acme")
    bus = Bus(BusSettings(url=NATS_URL, prefix=prefix, partitions=2))
    # The very forwarder delivery's bootstrap runs with CJO_EVENT_BUS set.
    forwarder = identity_events_forwarder(settings_for("delivery", sqlite_backend), box.db,
                                          box.outbox, bus=bus)
    opened = event("cjo-delivery:eng-1", ("email", "ann@example.com"), name="email_opened")
    try:
        async with serve_identity(sqlite_backend, recorder, ManualClock(),
                                  **bus_env(prefix)) as identity:
            await identity.new_workspace("acme")
            box.queue(IDENTITY_EVENTS_TOPIC, [
                opened.SerializeToString(),
                opened.SerializeToString(),  # re-sent: applied once
                event("cjo-delivery:eng-2", name="email_clicked").SerializeToString(),  # no id
                event("cjo-delivery:eng-3", ("email", "bo@example.com"),
                      name="email_clicked").SerializeToString()])
            await drain(forwarder)
            assert box.queued() == 0  # in the stream now

            async def stored() -> list[tuple[str, str]]:
                def read() -> list[tuple[str, str]]:
                    with identity.app.db.transaction() as session:
                        return [(r.message_id, r.name) for r in session.execute(
                            select(events.c.message_id, events.c.name)
                            .where(events.c.workspace_id == "acme")
                            .order_by(events.c.message_id)).all()]
                return await identity.app.db.run(read)

            async def both() -> bool:
                return len(await stored()) >= 2
            await eventually(both, timeout=20)
            assert await stored() == [("cjo-delivery:eng-1", "email_opened"),
                                      ("cjo-delivery:eng-3", "email_clicked")]

            letters = metadata.tables["dead_letters"]

            async def refused() -> list[str]:
                def read() -> list[str]:
                    with identity.app.db.transaction() as session:
                        return [r.source for r in session.execute(select(letters)).all()]
                return await identity.app.db.run(read)
            await eventually(refused, timeout=20)
            assert await refused() == ["bus:" + IDENTITY_EVENTS_TOPIC]

            # Retried, it goes to IngestEvents again (in process) and, still without an
            # identifier, comes back under the redelivery's source, which can be retried too.
            redelivery = f"outbox:redeliver.{IDENTITY_EVENTS_TOPIC}"
            retried = await identity.dead_letters.RetryDeadLetters(
                dl_pb.RetryDeadLettersRequest(all=True, request_id="retry-1"),
                metadata=as_service("acme"))
            assert len(retried.retried_ids) == 1

            async def back() -> bool:
                return await refused() == [redelivery]
            await eventually(back, timeout=20)
            await identity.dead_letters.RetryDeadLetters(
                dl_pb.RetryDeadLettersRequest(all=True, source=redelivery, request_id="retry-2"),
                metadata=as_service("acme"))
            await eventually(back, timeout=20)
            assert await stored() == [("cjo-delivery:eng-1", "email_opened"),
                                      ("cjo-delivery:eng-3", "email_clicked")]
    finally:
        await bus.close()
        box.db.dispose()

