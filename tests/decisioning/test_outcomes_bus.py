"""Outcomes reaching decisioning through the event bus (CJO_EVENT_BUS) against the real NATS
JetStream at 127.0.0.1:4222: delivery's message facts (decisioning.facts) and identity's track
events (decisioning.events), published by the very forwarders the senders run, are taken by the
decisioning service's own consumers into RecordMessageFacts and RecordEvents: a sent message
exposes its decision, a purchase rewards it, a refused item goes to the dead letters, and nothing
is taken twice. Each test uses a stream prefix of its own and removes its streams afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from nats_support import NATS_URL, SenderOutbox, bus_env, drain, drop_streams, nats_listening
from outcomes_support import START, running, sent, track

from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_decisioning.adapters.tables import EXPOSED, NOT_REWARDED, REWARDED, metadata
from cjo_platform.bus import Bus, BusSettings
from cjo_platform.clock import ManualClock
from cjo_platform.decisioning import (
    DECISIONING_EVENTS_TOPIC,
    DECISIONING_FACTS_TOPIC,
    decisioning_events_forwarder,
    decisioning_facts_forwarder,
)
from cjo_platform.protobuf import to_timestamp
from support import SERVICE_TOKEN, Backend, bearer, eventually, settings_for

pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")

HOUR = timedelta(hours=1)
TOPICS = (DECISIONING_FACTS_TOPIC, DECISIONING_EVENTS_TOPIC)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await drop_streams(name, TOPICS)


async def test_facts_and_events_reach_decisioning_through_jetstream(
        sqlite_backend: Backend, prefix: str, tmp_path: Path) -> None:
    box = SenderOutbox(tmp_path / "senders.db", "ws-a")
    bus = Bus(BusSettings(url=NATS_URL, prefix=prefix, partitions=2))
    # The very forwarders delivery's and identity's bootstraps run with CJO_EVENT_BUS set.
    facts = decisioning_facts_forwarder(settings_for("delivery", sqlite_backend), box.db,
                                        box.outbox, bus=bus)
    events = decisioning_events_forwarder(settings_for("identity", sqlite_backend), box.db,
                                          box.outbox, bus=bus)
    try:
        async with running(sqlite_backend, ManualClock(START), **bus_env(prefix)) as d:
            await d.point("home", "order_completed", window=timedelta(days=1))
            await d.decided("d1", "home", "p1")
            await d.decided("d2", "home", "p2")
            box.queue(DECISIONING_FACTS_TOPIC, [
                sent("m1", "d1", START + HOUR).SerializeToString(),
                sent("m1", "d1", START + HOUR).SerializeToString(),  # a repeat: taken once
                b"\x0a\x00",  # a fact without an id: refused alone, the rest flow
                sent("m2", "d2", START + HOUR, "p2").SerializeToString()])
            await drain(facts)
            assert box.queued() == 0  # published: in the stream now

            async def exposed() -> bool:
                return all([(await d.decision(n)).outcome == EXPOSED for n in ("d1", "d2")])
            await eventually(exposed, timeout=20)

            box.queue(DECISIONING_EVENTS_TOPIC, [
                track("e1", "p1", "order_completed", START + 2 * HOUR).SerializeToString()])
            await drain(events)

            async def rewarded() -> bool:
                return bool((await d.decision("d1")).outcome == REWARDED)
            await eventually(rewarded, timeout=20)
            first, second = await d.decision("d1"), await d.decision("d2")
            assert (first.expose_time, first.reward_event_id) == (START + HOUR, "e1")
            assert second.outcome == EXPOSED  # p2 bought nothing

            # The fact decisioning refused is a dead letter of the bus topic, kept to replay.
            letters = metadata.tables["dead_letters"]

            async def refused() -> list[object]:
                return await d.rows(letters)
            await eventually(refused, timeout=20)
            assert [row.source for row in await d.rows(letters)] == [
                "bus:" + DECISIONING_FACTS_TOPIC]
    finally:
        await bus.close()
        box.db.dispose()


async def test_a_watermark_left_from_before_the_bus_holds_no_window_back(
        sqlite_backend: Backend, prefix: str) -> None:
    """Over the bus identity reports no forwarding watermark (its outbox's would tell what was
    published, not what decisioning took): a lapsed window is learned after the grace alone,
    as before watermarks, even with one left from the gRPC days that stopped moving."""
    async with running(sqlite_backend, ManualClock(START), **bus_env(prefix)) as d:
        await d.point("home", "order_completed", window=HOUR)
        await d.decided("d1", "home", "p1")
        await d.facts(sent("m1", "d1", START))
        await d.stub.RecordForwardingWatermark(pb.RecordForwardingWatermarkRequest(
            stream=pb.FORWARDED_STREAM_EVENTS, delivered_before=to_timestamp(START)),
            metadata=bearer(SERVICE_TOKEN))
        d.clock.advance(HOUR + timedelta(minutes=5, seconds=1))  # the window and the grace

        async def learned() -> bool:
            return bool((await d.decision("d1")).learned)
        await eventually(learned, timeout=20)
        assert (await d.decision("d1")).outcome == NOT_REWARDED
