"""The bus's own JetStream wire calls against the real server at 127.0.0.1:4222: a partition's
batches (:class:`PullBatches`, in place of nats-py's per-message fetch) and the relay's
publishes with a PubAck (:class:`PubAcks`, in place of ``publish_async``) mean what nats-py's
calls meant."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError
from nats_support import NATS_URL, nats_listening

from cjo_platform.bus.consumer import _position
from cjo_platform.bus.pubacks import PubAcks
from cjo_platform.bus.pull import PullBatches
from cjo_platform.bus.relay import EXPECTED_STREAM_HEADER, MSG_ID_HEADER

pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")


@dataclass
class Wire:
    nc: Client
    js: JetStreamContext
    stream: str
    subject: str  # the stream's subjects: <subject>.>

    async def publish(self, count: int) -> None:
        for i in range(count):
            await self.js.publish(f"{self.subject}.a", f"m{i}".encode())

    async def batches(self, consumer: str = "c") -> PullBatches:
        await self.js.add_consumer(self.stream, ConsumerConfig(
            durable_name=consumer, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=100))
        batches = PullBatches(self.nc, self.stream, consumer)
        await batches.start()
        return batches


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    name = f"T{uuid.uuid4().hex[:10]}".upper()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"],
                                     retention=RetentionPolicy.WORK_QUEUE))
    yield Wire(nc, js, name, name.lower())
    await js.delete_stream(name)
    await nc.close()


async def test_a_fetch_takes_what_the_consumer_holds_in_stream_order(wire: Wire) -> None:
    await wire.publish(30)
    batches = await wire.batches()
    msgs = await batches.fetch(20, timeout=5)
    assert [m.data for m in msgs] == [f"m{i}".encode() for i in range(20)]
    rest = await batches.fetch(20, timeout=5)
    assert [m.data for m in rest] == [f"m{i}".encode() for i in range(20, 30)]
    for msg in (*msgs, *rest):
        await msg.ack()
    assert await batches.fetch(20, timeout=0.2) == []  # nothing more: none within the timeout


async def test_a_waiting_fetch_returns_the_first_message_that_comes(wire: Wire) -> None:
    batches = await wire.batches()
    fetching = asyncio.create_task(batches.fetch(20, timeout=30))
    await wire.publish(1)
    # It answers once the message came, not when the request expires.
    msgs = await asyncio.wait_for(fetching, 15)
    assert [m.data for m in msgs] == [b"m0"]


async def test_a_fetch_right_after_one_that_gave_up_still_waits_for_its_message(
        wire: Wire) -> None:
    batches = await wire.batches()
    # A fetch that gave up at its own deadline leaves its request to expire at the server a
    # moment later: that request's late "408" must not end the next fetch. Whether it comes
    # late depends on the server's timer, so the test tries a few times.
    async def gave_up_then_fetched(gave_up: asyncio.Event) -> list[Msg]:
        assert await batches.fetch(20, timeout=0.05) == []
        gave_up.set()
        return await batches.fetch(20, timeout=30)  # right away, as the consumer does

    for i in range(5):
        gave_up = asyncio.Event()
        fetching = asyncio.create_task(gave_up_then_fetched(gave_up))
        await gave_up.wait()
        await wire.nc.flush()  # the second request is at the server
        while (await wire.js.consumer_info(wire.stream, "c")).num_waiting > 1:
            pass  # the first request expired: its 408 was sent before this answer
        await wire.js.publish(f"{wire.subject}.a", f"m{i}".encode())
        msgs = await asyncio.wait_for(fetching, 15)
        assert [m.data for m in msgs] == [f"m{i}".encode()]
        await msgs[0].ack()


async def test_what_an_earlier_request_delivers_late_is_handed_to_the_next_fetch(
        wire: Wire) -> None:
    batches = await wire.batches()
    abandoned = asyncio.create_task(batches.fetch(20, timeout=30))
    while (await wire.js.consumer_info(wire.stream, "c")).num_waiting < 1:
        pass
    abandoned.cancel()  # its request still waits at the server
    fetching = asyncio.create_task(batches.fetch(20, timeout=30))
    while (await wire.js.consumer_info(wire.stream, "c")).num_waiting < 2:
        pass
    await wire.publish(1)  # the server hands it to the first request
    msgs = await asyncio.wait_for(fetching, 15)  # not when the second request expires
    assert [m.data for m in msgs] == [b"m0"]


async def test_a_message_not_acked_comes_again_and_an_acked_one_does_not(wire: Wire) -> None:
    await wire.publish(2)
    batches = await wire.batches()
    first, second = await batches.fetch(10, timeout=5)
    await first.ack()
    await second.nak()
    again = await batches.fetch(10, timeout=5)
    assert [m.data for m in again] == [b"m1"]


async def test_a_request_the_consumer_refuses_fails_rather_than_finding_nothing(
        wire: Wire) -> None:
    await wire.js.add_consumer(wire.stream, ConsumerConfig(
        durable_name="one", ack_policy=AckPolicy.EXPLICIT, max_waiting=1))
    waiting, refused = PullBatches(wire.nc, wire.stream, "one"), \
        PullBatches(wire.nc, wire.stream, "one")
    await waiting.start()
    await refused.start()
    first = asyncio.create_task(waiting.fetch(10, timeout=30))
    await asyncio.sleep(0)  # its request goes first on the one connection
    # The consumer's worker logs the error and waits before fetching again (no busy loop).
    with pytest.raises(APIError, match="MaxWaiting"):
        await refused.fetch(10, timeout=30)
    await wire.publish(1)
    assert [m.data for m in await first] == [b"m0"]


async def test_the_position_read_from_the_reply_subject_is_nats_metadata(wire: Wire) -> None:
    await wire.publish(3)
    batches = await wire.batches()
    for msg in await batches.fetch(10, timeout=5):
        meta = msg.metadata
        assert _position(msg) == (meta.sequence.stream, meta.timestamp)


async def test_a_wave_is_answered_once_the_stream_stored_each_message(wire: Wire) -> None:
    pub_acks = PubAcks(wire.nc)
    await pub_acks.start()
    wave = pub_acks.wave()
    for i in range(6):
        await wave.publish(i, f"{wire.subject}.a", f"m{i}".encode(),
                           {MSG_ID_HEADER: f"id-{i % 3}", EXPECTED_STREAM_HEADER: wire.stream})
    assert await wave.wait(30) == dict.fromkeys(range(6))
    # The same Nats-Msg-Id again is answered as stored, and the stream holds it once.
    info = await wire.js.stream_info(wire.stream)
    assert info.state.messages == 3


async def test_a_publish_the_stream_refuses_is_answered_with_its_error(wire: Wire) -> None:
    pub_acks = PubAcks(wire.nc)
    await pub_acks.start()
    wave = pub_acks.wave()
    await wave.publish(0, f"{wire.subject}.a", b"x", {EXPECTED_STREAM_HEADER: "ANOTHER"})
    await wave.publish(1, f"nostream{uuid.uuid4().hex[:8]}.a", b"x", {})
    await wave.publish(2, f"{wire.subject}.a", b"y", {})
    answers = await wave.wait(30)
    assert isinstance(answers[0], APIError)
    assert isinstance(answers[1], NoStreamResponseError)
    assert answers[2] is None
    assert (await wire.js.stream_info(wire.stream)).state.messages == 1


async def test_a_wave_not_answered_in_time_leaves_those_out_and_forgets_them(
        wire: Wire) -> None:
    pub_acks = PubAcks(wire.nc)
    await pub_acks.start()
    wave = pub_acks.wave()
    # A subject a plain subscriber takes and never answers stands for an answer lost.
    silent = await wire.nc.subscribe(f"silent{uuid.uuid4().hex[:8]}")
    await wave.publish(0, silent.subject, b"lost", {})
    assert await wave.wait(0.2) == {}
    assert pub_acks._waiting == {}
