"""The event bus against the real NATS JetStream at 127.0.0.1:4222: the outbox relay publishes
each row once (Nats-Msg-Id), the partition consumers hand a workspace's messages to the
receiver in order, a refused message goes to the dead letters without holding the others, a
slow receiver is not handed its messages twice, and replicas share the partitions. Packed
messages: a round's rows of one subject go as one message, the same rows published again are
dropped, each row is answered on its own, and single-row messages of a previous release are read.

Every test uses a subject/stream prefix of its own and removes its streams afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import KeyValueConfig
from nats_support import NATS_URL, TEST_STREAM_BYTES, PrivateNats, nats_listening
from outbox_support import Box, open_box, url_of

from cjo_platform.backoff import RetryPolicy
from cjo_platform.bus import Bus, BusSettings, naming
from cjo_platform.bus.connection import CLAIM_MARGIN_SECONDS, load_bus_settings
from cjo_platform.bus.consumer import SETTLE_SHARE, BusConsumer
from cjo_platform.bus.packing import PACK_HEADER, pack, pack_message_id
from cjo_platform.bus.relay import WORKSPACE_HEADER, bus_sender
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.outbox import Forwarder, Later, OutboxRow, Refusal
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.ids import claimant_id
from cjo_platform.rpc.dead_letters import bus_replays
from support import Backend, eventually

TOPIC = "test.events"


pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")


def bus_settings(prefix: str, **overrides: float) -> BusSettings:
    # Packed by 64 unless told (the setting once every service reads packs). Streams capped
    # at 64 MiB: JetStream reserves a stream's cap from its store when the stream is made, and
    # a machine with little free disk has a small store.
    values: dict[str, float] = {"partitions": 4, "ack_wait_seconds": 2.0, "batch": 50,
                                "max_attempts": 2, "pack_rows": 64,
                                "max_bytes": TEST_STREAM_BYTES, **overrides}
    return BusSettings(url=NATS_URL, prefix=prefix, **values)  # type: ignore[arg-type]


async def remove_streams(bus: Bus) -> None:
    js = await bus.jetstream()
    for name in (naming.stream_name(bus.prefix, TOPIC),
                 "KV_" + naming.stream_name(bus.prefix, "claims")):
        with contextlib.suppress(Exception):  # never created by this test
            await js.delete_stream(name)
    await bus.close()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await remove_streams(Bus(bus_settings(name)))


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return open_box(f"sqlite:///{tmp_path / 'bus.db'}", "", ManualClock(), create=True)


@pytest.fixture
def stored_box(backend: Backend) -> Iterator[Box]:
    """A box on SQLite and on PostgreSQL (where the dead letters' storage is what a test is
    about)."""
    opened = open_box(url_of(backend), backend.schema_prefix + "bus", ManualClock(), create=True)
    yield opened
    if backend.kind == "postgresql":
        opened.db.drop_schema()
    opened.close()


class Receiver:
    """What the receiving service took, per profile, in order; refuses payloads it is told to."""

    def __init__(self, refuse: frozenset[bytes] = frozenset(), delay: float = 0.0) -> None:
        self.taken: list[bytes] = []
        self.refuse = refuse
        self.delay = delay
        self.calls = 0

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        refused = [Refusal(row, "INVALID_ARGUMENT: bad") for row in rows
                   if row.payload in self.refuse]
        self.taken.extend(row.payload for row in rows if row.payload not in self.refuse)
        return refused

    def by_profile(self) -> dict[str, list[int]]:
        seen: dict[str, list[int]] = {}
        for payload in self.taken:
            profile, index = payload.decode().split(":")
            seen.setdefault(profile, []).append(int(index))
        return seen


def payloads(profiles: int, per_profile: int) -> list[bytes]:
    return [f"p{i % profiles}:{i // profiles}".encode() for i in range(profiles * per_profile)]


def profile_of(row: OutboxRow) -> str:
    return row.payload.decode().split(":")[0]


async def relay(bus: Bus, box: Box, rows: list[bytes], workspace: str = "acme") -> Forwarder:
    # SQLite gives an emptied outbox's rows the ids 1, 2, ... again: their creation time tells
    # them apart (a manual clock stands still unless moved).
    clock = box.outbox.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(seconds=1))
    box.queue(TOPIC, workspace, rows)
    forwarder = Forwarder(box.db, box.outbox, TOPIC,
                          bus_sender(bus, "tests", TOPIC, ordering_key=profile_of))
    while await forwarder.drain_once():
        pass
    return forwarder


async def running(consumer: BusConsumer) -> asyncio.Task[None]:
    return asyncio.create_task(consumer.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def stream_messages(bus: Bus) -> int:
    js = await bus.jetstream()
    info = await js.stream_info(naming.stream_name(bus.prefix, TOPIC))
    return int(info.state.messages)


def published_again(box: Box, sent: list[bytes]) -> list[OutboxRow]:
    """The rows ``relay`` queued, as a relay that crashed after their PubAck reads them again."""
    return [OutboxRow(id=i + 1, topic=TOPIC, workspace_id="acme", payload=p, traceparent="",
                      create_time=box.outbox.clock.now()) for i, p in enumerate(sent)]


async def consume(bus: Bus, box: Box, receiver: Receiver, taken: int,
                  **options: Any) -> None:
    """Runs a consumer into ``receiver`` until it took ``taken`` messages (and the dead letters
    hold one, with ``letter``) and the stream is empty."""
    letter = options.pop("letter", False)
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                           **options)
    task = await running(consumer)
    try:
        await eventually(lambda: len(receiver.taken) >= taken
                         and (not letter or bool(box.letters("acme"))), timeout=20)
        await eventually(lambda: _empty(bus), timeout=10)
    finally:
        await stop(task)


async def test_rows_reach_the_receiver_once_in_profile_order(prefix: str, box: Box) -> None:
    # One message per row (as a relay without packing publishes; packed: test_bus_packing.py).
    bus = Bus(bus_settings(prefix, pack_rows=1))
    sent = payloads(profiles=5, per_profile=20)
    await relay(bus, box, sent)
    assert box.queued(TOPIC) == 0  # deleted once JetStream acknowledged them
    assert await stream_messages(bus) == len(sent)
    # A relay that crashed after the PubAck, before deleting its rows, publishes them again:
    # the stream's duplicate window drops them (same producer, topic and row id).
    republish = bus_sender(bus, "tests", TOPIC, ordering_key=profile_of)
    assert await republish("acme", published_again(box, sent)) == []
    assert await stream_messages(bus) == len(sent)

    receiver = Receiver()
    await consume(bus, box, receiver, len(sent))
    assert sorted(receiver.taken) == sorted(sent)  # each once
    assert receiver.by_profile() == {f"p{k}": list(range(20)) for k in range(5)}
    assert await stream_messages(bus) == 0  # acked: the work queue dropped them
    await bus.close()


async def test_a_failed_publish_holds_its_profile_and_the_rows_behind_it(
        prefix: str, box: Box) -> None:
    # The relay keeps many publishes in flight. The stream refuses p1:0 (larger than its
    # max_msg_size) while p0:0 and p2:0, in flight with it, are stored: the rows from p1:0 on
    # stay in the outbox, p1:1 is never sent before p1:0, and nothing behind the failure is
    # sent this round. Once the stream takes the row, the rest goes, each message once.
    bus = Bus(bus_settings(prefix, partitions=1, pack_rows=1))
    stream = await bus.ensure_stream(TOPIC)
    js = await bus.jetstream()
    config = (await js.stream_info(stream)).config
    config.max_msg_size = 1000
    await js.update_stream(config)
    large = b"p1:0" + b" " * 2000
    sent = [b"p0:0", large, b"p0:1", b"p1:1", b"p2:0"]
    forwarder = await relay(bus, box, sent)
    assert await stored(bus) == [b"p0:0", b"p2:0"]  # one at a time would have stored p0:0 only
    assert box.queued(TOPIC) == 4

    config.max_msg_size = -1
    await js.update_stream(config)
    clock = box.outbox.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(minutes=2))  # past the held rows' retry
    while await forwarder.drain_once():
        pass
    assert box.queued(TOPIC) == 0
    # p2:0 was published again and dropped as a duplicate; p1's rows are in their order.
    assert await stored(bus) == [b"p0:0", b"p2:0", large, b"p0:1", b"p1:1"]
    await bus.close()


async def stored(bus: Bus) -> list[bytes]:
    """The stream's messages, in stream order."""
    js = await bus.jetstream()
    stream = naming.stream_name(bus.prefix, TOPIC)
    state = (await js.stream_info(stream)).state
    return [(await js.get_msg(stream, seq)).data or b""
            for seq in range(state.first_seq, state.last_seq + 1)]


@pytest.mark.parametrize("pack_rows", [1, 64])
async def test_a_refused_message_goes_to_the_dead_letters_and_the_rest_flow(
        prefix: str, box: Box, pack_rows: int) -> None:
    # Packed, the refused row is one of the message's ten: it goes to the dead letters alone,
    # its neighbours are taken, and the message is acked (the stream empties).
    bus = Bus(bus_settings(prefix, partitions=1, pack_rows=pack_rows))
    sent = payloads(profiles=1, per_profile=10)
    bad = sent[3]
    await relay(bus, box, sent)
    assert await stream_messages(bus) == (10 if pack_rows == 1 else 1)
    receiver = Receiver(refuse=frozenset({bad}))
    await consume(bus, box, receiver, 9, letter=True, item_key=lambda row: row.payload.decode())
    assert receiver.taken == [p for p in sent if p != bad]
    [letter] = box.letters("acme")
    assert (letter.source, letter.item_key, letter.payload) == (f"bus:{TOPIC}", "p0:3", bad)
    assert "INVALID_ARGUMENT" in letter.error
    await bus.close()


async def test_a_retried_dead_letter_reaches_the_receiver_again(prefix: str, box: Box) -> None:
    # A message refused for good is acked (the stream no longer holds it) and kept as a dead
    # letter; once the cause is fixed, RetryDeadLetters' replay queues it in the service's own
    # outbox and the consumer's redelivery forwarder hands it to the same receiver.
    bus = Bus(bus_settings(prefix, partitions=1))
    sent = payloads(profiles=1, per_profile=4)
    bad = sent[1]
    await relay(bus, box, sent)
    receiver = Receiver(refuse=frozenset({bad}))
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                           item_key=lambda row: row.payload.decode())
    task = await running(consumer)
    try:
        await eventually(lambda: len(receiver.taken) == 3 and box.letters("acme"), timeout=20)
    finally:
        await stop(task)
    replays = bus_replays(consumer)
    redelivery = consumer.redelivery(box.outbox)
    assert set(replays) == {consumer.name, redelivery.name}

    def retry(source: str) -> None:
        with box.db.transaction() as session:
            letters = box.dead_letters.take(session, "acme", None, sources=[source])
            replays[source](UnitOfWork(session, box.outbox.clock, box.outbox), letters)

    # Still refused: back in the dead letters, under the redelivery's source, retried the same way.
    retry(consumer.name)
    assert box.letters("acme") == [] and box.queued(consumer.redelivery_topic) == 1
    assert await redelivery.drain_once() == 1
    [again] = box.letters("acme")
    assert (again.source, again.item_key, again.payload) == (redelivery.name, "p0:1", bad)
    # The cause fixed: the receiver takes it, and nothing is left anywhere.
    receiver.refuse = frozenset()
    retry(again.source)
    assert await redelivery.drain_once() == 1
    assert receiver.taken == [sent[0], sent[2], sent[3], bad]
    assert box.letters("acme") == [] and box.queued(consumer.redelivery_topic) == 0
    await bus.close()


async def _empty(bus: Bus) -> bool:
    return await stream_messages(bus) == 0


async def test_a_slow_receiver_is_not_handed_its_messages_twice(prefix: str, box: Box) -> None:
    # Each call takes longer than ack_wait: the consumer marks its messages in progress, so
    # JetStream does not deliver them again meanwhile.
    bus = Bus(bus_settings(prefix, partitions=1, ack_wait_seconds=1.0, batch=5))
    sent = payloads(profiles=2, per_profile=5)
    await relay(bus, box, sent)
    receiver = Receiver(delay=2.5)
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock())
    task = await running(consumer)
    try:
        await eventually(lambda: len(receiver.taken) >= len(sent), timeout=30)
        await asyncio.sleep(2.5)  # a redelivery, had there been one, would show up by now
    finally:
        await stop(task)
    assert sorted(receiver.taken) == sorted(sent)
    assert receiver.by_profile() == {"p0": list(range(5)), "p1": list(range(5))}
    await bus.close()


async def test_replicas_share_the_partitions_and_keep_each_profiles_order(
        prefix: str, box: Box) -> None:
    bus_a, bus_b = Bus(bus_settings(prefix)), Bus(bus_settings(prefix))
    receiver = Receiver(delay=0.01)
    consumers = [BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                             owner=name) for bus, name in ((bus_a, "a"), (bus_b, "b"))]
    tasks = [await running(c) for c in consumers]
    try:
        await eventually(lambda: all(len(c.held_partitions()) == 2 for c in consumers),
                         timeout=20)
        sent = payloads(profiles=20, per_profile=10)
        await relay(bus_a, box, sent)
        await eventually(lambda: len(receiver.taken) >= len(sent), timeout=20)
        assert set(consumers[0].held_partitions()).isdisjoint(consumers[1].held_partitions())
        # One replica stops: it gives its partitions back, and the other takes them over.
        await stop(tasks.pop())
        await eventually(lambda: len(consumers[0].held_partitions()) == 4, timeout=20)
        more = [f"p{i % 20}:{10 + i // 20}".encode() for i in range(40)]
        await relay(bus_a, box, more)
        await eventually(lambda: len(receiver.taken) >= len(sent) + len(more), timeout=20)
    finally:
        for task in tasks:
            await stop(task)
    assert sorted(receiver.taken) == sorted(sent + more)
    assert receiver.by_profile() == {f"p{k}": list(range(12)) for k in range(20)}
    await bus_a.close()
    await bus_b.close()


async def test_a_claims_bucket_made_with_other_settings_is_used_and_lengthened(
        prefix: str, box: Box) -> None:
    # Another service (or this one before a config change) made the shared claims bucket with a
    # shorter claim lifetime: this consumer still claims, and the bucket is made to keep a claim
    # as long as this consumer needs (never shorter than its ack wait).
    bus = Bus(bus_settings(prefix, partitions=2))
    js = await bus.jetstream()
    bucket = naming.stream_name(prefix, "claims")
    await js.create_key_value(KeyValueConfig(bucket=bucket, ttl=1.0, history=1))
    receiver = Receiver()
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock())
    task = await running(consumer)
    try:
        await eventually(lambda: consumer.held_partitions() == [0, 1], timeout=10)
        assert consumer.claim_error is None
        sent = payloads(profiles=2, per_profile=3)
        await relay(bus, box, sent)
        await eventually(lambda: len(receiver.taken) == len(sent), timeout=10)
    finally:
        await stop(task)
    info = await js.stream_info(f"KV_{bucket}")
    assert info.config.max_age is not None
    assert info.config.max_age >= bus.settings.claim_seconds
    await bus.close()


async def test_a_consumer_that_cannot_claim_says_so(prefix: str, box: Box) -> None:
    # Three replicas on a one-node server: the claims bucket cannot be made. The consumer keeps
    # trying and exposes why it works nothing (an error log and a metric each round).
    bus = Bus(bus_settings(prefix, replicas=3))
    consumer = BusConsumer(bus, TOPIC, Receiver(), box.db, box.dead_letters, ManualClock())
    task = await running(consumer)
    try:
        await eventually(lambda: consumer.claim_error is not None, timeout=10)
        assert consumer.held_partitions() == []
    finally:
        await stop(task)
    await bus.close()


@pytest.mark.parametrize("ack_wait", [1.0, 2.0, 30.0, 300.0])
def test_a_dead_holders_claim_outlives_its_messages_ack_wait(ack_wait: float) -> None:
    # A partition's worker fetches and marks in progress only before its deadline,
    # fence_seconds after its last renewal was asked for; the claim lapses claim_seconds
    # after it at the earliest. Killed at any moment (a failed round's retry under way or
    # not), the holder leaves its claim ack_wait + the margin after the last message it was
    # handed: the next holder gets those messages before newer ones of their profiles
    # (test_bus_claim_fence runs it).
    settings = bus_settings("t", ack_wait_seconds=ack_wait)
    claim, fence = settings.claim_seconds, settings.fence_seconds
    assert fence + ack_wait + CLAIM_MARGIN_SECONDS <= claim
    # A round starts renew_seconds after the last one began and renews first, answered within
    # claim_round_seconds; a failed one is tried again a fifth of renew_seconds after it
    # began (as it ends): the retry's renewal is answered before the deadline, so one slow
    # claims request stops no partition.
    renew, round_ = settings.renew_seconds, settings.claim_round_seconds
    assert round_ <= renew / 5
    assert renew + renew / 5 + round_ < fence
    # A worker stopped (at its deadline at the latest) waits up to SETTLE_SHARE of the claim
    # for its receiver call, then ends its pull request, gives back what it held and deletes
    # its claim: a third of the claim is left for that.
    assert claim - fence - claim * SETTLE_SHARE >= claim / 3


async def test_a_killed_holders_messages_come_before_newer_ones(prefix: str, box: Box) -> None:
    # Replica "dead" renewed its claim, fetched p0:0 just before its next renewal and was
    # killed. p0:1 is published after. The next holder must hand p0:0 to the receiver first.
    bus = Bus(bus_settings(prefix, partitions=1))
    kv = await bus.claims()
    await relay(bus, box, [b"p0:0"])
    await kv.create("claim.test_events.0", b"dead")
    await asyncio.sleep(bus.settings.renew_seconds - 0.2)
    stream, name = await bus.ensure_consumer(TOPIC, 0)
    js = await bus.jetstream()
    sub = await js.pull_subscribe_bind(name, stream=stream)
    [taken] = await sub.fetch(1, timeout=5)
    assert taken.data == b"p0:0"  # never answered: due again ack_wait from now
    await relay(bus, box, [b"p0:1"])
    receiver = Receiver()
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock())
    task = await running(consumer)
    try:
        await eventually(lambda: len(receiver.taken) >= 2, timeout=30)
    finally:
        await stop(task)
    assert receiver.taken == [b"p0:0", b"p0:1"]
    await bus.close()


async def test_a_partition_waiting_through_a_broker_restart_asks_again(
        private_nats: PrivateNats, box: Box) -> None:
    # An idle partition's pull request waits at the server for as long as the fetch may (long,
    # so that idle partitions cost nothing); a restarted server forgot it. Reconnected, the
    # consumer asks again, so what is published then comes at once, not at the fetch's end.
    bus = Bus(replace(bus_settings("t", partitions=1), url=private_nats.url))
    stream, name = await bus.ensure_consumer(TOPIC, 0)
    js = await bus.jetstream()

    async def waiting() -> int:
        return (await js.consumer_info(stream, name)).num_waiting

    receiver = Receiver()
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                           fetch_seconds=3600)
    task = await running(consumer)
    try:
        await eventually(waiting, timeout=20)  # the partition's fetch waits at the server
        private_nats.kill()
        private_nats.start()
        await relay(bus, box, [b"p0:0"])
        await eventually(lambda: receiver.taken == [b"p0:0"], timeout=30)
    finally:
        await stop(task)
        await bus.close()


class Stalled(Receiver):
    """Asks for workspace ``stalled``'s messages later until ``recover``; takes the others."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = True

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        if workspace_id == "stalled" and self.stalled:
            raise Later("busy")
        return await super().__call__(workspace_id, rows)


@pytest.mark.parametrize("pack_rows", [1, 4])
async def test_a_stalled_workspace_does_not_hold_up_the_others_on_its_partition(
        prefix: str, box: Box, pack_rows: int) -> None:
    # One partition, batch 5: the stalled workspace has 3 times a batch waiting; another
    # workspace's message still flows, and once the stalled one recovers its messages come in
    # stream order, each once. Packed by 4, its messages beyond the one row it may keep go
    # round the stream whole.
    bus = Bus(bus_settings(prefix, partitions=1, batch=5, pack_rows=pack_rows))
    stalled = [f"s:{i}".encode() for i in range(15)]
    await relay(bus, box, stalled, workspace="stalled")
    await relay(bus, box, [b"o:0"], workspace="other")
    receiver = Stalled()
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                           retry=RetryPolicy(base_delay=timedelta(seconds=0.2),
                                             max_delay=timedelta(seconds=0.5)))
    task = await running(consumer)
    try:
        await eventually(lambda: receiver.taken == [b"o:0"], timeout=10)
        await relay(bus, box, [b"s:15"], workspace="stalled")
        await relay(bus, box, [b"o:1"], workspace="other")
        await eventually(lambda: receiver.taken == [b"o:0", b"o:1"], timeout=10)
        receiver.stalled = False
        await eventually(lambda: len(receiver.taken) == 18, timeout=20)
        await eventually(lambda: _empty(bus), timeout=10)
    finally:
        await stop(task)
    assert [p for p in receiver.taken if p.startswith(b"s:")] == [*stalled, b"s:15"]
    assert box.letters("stalled") == []
    await bus.close()


async def test_a_replica_that_stopped_cleanly_is_not_counted(prefix: str, box: Box) -> None:
    # A stops cleanly (deleting its member key); B, started alone right after, takes every
    # partition in its first round instead of waiting for A's key to expire.
    bus = Bus(bus_settings(prefix))
    first = BusConsumer(bus, TOPIC, Receiver(), box.db, box.dead_letters, ManualClock(),
                        owner="a")
    task = await running(first)
    await eventually(lambda: len(first.held_partitions()) == 4, timeout=10)
    await stop(task)
    second = BusConsumer(bus, TOPIC, Receiver(), box.db, box.dead_letters, ManualClock(),
                         owner="b")
    task = await running(second)
    try:
        await eventually(lambda: len(second.held_partitions()) == 4,
                         timeout=bus.settings.renew_seconds / 2)
    finally:
        await stop(task)
    await bus.close()


def test_a_profile_always_has_the_same_partition() -> None:
    # CRC-32: the same in every process and release (Python's hash() is salted per process).
    assert naming.partition_of("profile-42", 8) == naming.partition_of("profile-42", 8) == 6
    assert naming.subject("cjo", "orchestration.events", "acme", 3) == \
        "cjo.orchestration.events.acme.3"
    assert naming.token("a.b c") == "~" + b"a.b c".hex()
    created = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert naming.message_id("identity", "orchestration.events", 7, created) == \
        f"identity:orchestration.events:7:{created.timestamp():.6f}"


def test_claimants_have_ids_of_their_own(box: Box) -> None:
    # One rule for every holder of leases and claims (outbox forwarders, bus consumers): the
    # host and process an operator looks for, unique per holder, short enough for a
    # lease_owner column and a single token of a JetStream key-value key.
    bus = Bus(bus_settings("t"))
    ids = [Forwarder(box.db, box.outbox, TOPIC, Receiver()).owner,
           Forwarder(box.db, box.outbox, TOPIC, Receiver()).owner,
           BusConsumer(bus, TOPIC, Receiver(), box.db, box.dead_letters, ManualClock()).owner,
           claimant_id()]
    assert len(set(ids)) == len(ids)
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()[:30])
    for value in ids:
        assert value.startswith(f"{host}-{os.getpid()}-")
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value)


async def test_a_burst_across_partitions_reaches_the_receiver_in_few_calls(
        prefix: str, box: Box) -> None:
    # 40 profiles over 4 partitions, already in the stream: while the receiver works on the
    # first partition's rows (slowly), the other partitions' rows wait and then go in one
    # call, not one call per partition; each profile's rows still come in order, once.
    bus = Bus(bus_settings(prefix))
    sent = payloads(profiles=40, per_profile=2)
    await relay(bus, box, sent)
    receiver = Receiver(delay=1.0)
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock())
    task = await running(consumer)
    try:
        await eventually(lambda: len(receiver.taken) >= len(sent), timeout=30)
        await eventually(lambda: _empty(bus), timeout=10)
    finally:
        await stop(task)
    assert receiver.calls < bus.settings.partitions
    assert sorted(receiver.taken) == sorted(sent)
    assert receiver.by_profile() == {f"p{k}": [0, 1] for k in range(40)}
    await bus.close()


async def test_a_lingering_consumer_hands_the_partitions_rows_over_in_one_call(
        prefix: str, box: Box) -> None:
    # Facts' consumers linger (CJO_FACTS_LINGER_MS): rows that come on one partition wait for
    # what the other partitions bring, and go to an idle receiver in one call (here once they
    # make a batch: 60 rows), as the facts' forwarder hands its rounds over; without a linger
    # the first partition's rows went on their own.
    bus = Bus(bus_settings(prefix, partitions=4, batch=60))
    profiles = [f"p{k}" for k in range(40)]
    on_0 = [p for p in profiles if naming.partition_of(p, 4) == 0][:5]
    elsewhere = [p for p in profiles if naming.partition_of(p, 4) != 0][:15]
    receiver = Receiver()
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                           linger=3600.0)
    task = await running(consumer)
    try:
        await eventually(lambda: len(consumer.held_partitions()) == bus.settings.partitions,
                         timeout=20)
        first = [f"{p}:{i}".encode() for i in range(3) for p in on_0]
        second = [f"{p}:{i}".encode() for i in range(3) for p in elsewhere]
        await relay(bus, box, first)
        # Partition 0 fetched them (held while it lingers, or else taken already).
        await eventually(lambda: bool(consumer._msgs) or len(receiver.taken) >= len(first),
                         timeout=20)
        await relay(bus, box, second)
        await eventually(lambda: len(receiver.taken) >= len(first) + len(second), timeout=30)
        await eventually(lambda: _empty(bus), timeout=10)
    finally:
        await stop(task)
    assert receiver.calls == 1
    assert receiver.by_profile() == {p: [0, 1, 2] for p in on_0 + elsewhere}
    await bus.close()


async def test_a_lingering_partition_waits_one_linger_for_all_its_workspaces(
        prefix: str, box: Box) -> None:
    # A partition hands its fetch's workspaces to the receiver one after another: the linger is
    # counted from the fetch, so a round of 6 workspaces waits one linger, not six (each
    # workspace behind the others' waits: 6 x 2 s before, ~2 s now).
    linger = 2.0
    bus = Bus(bus_settings(prefix, partitions=1, batch=50))
    for w in range(6):
        await relay(bus, box, [f"p{w}:0".encode()], workspace=f"ws{w}")
    receiver = Receiver()
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                           linger=linger)
    loop = asyncio.get_running_loop()
    task = await running(consumer)
    start = loop.time()
    try:
        await eventually(lambda: len(receiver.taken) >= 6, timeout=60)
    finally:
        await stop(task)
    assert loop.time() - start < 2.5 * linger
    assert receiver.by_profile() == {f"p{w}": [0] for w in range(6)}
    await bus.close()


async def test_a_lingering_consumer_hands_a_full_batch_over_at_once(
        prefix: str, box: Box) -> None:
    # A batch of rows does not wait for the linger to end.
    bus = Bus(bus_settings(prefix, partitions=1, batch=50))
    receiver = Receiver()
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                           linger=3600.0)
    task = await running(consumer)
    try:
        sent = payloads(profiles=10, per_profile=5)
        await relay(bus, box, sent)
        await eventually(lambda: len(receiver.taken) >= len(sent), timeout=30)
    finally:
        await stop(task)
    assert receiver.calls == 1
    assert receiver.by_profile() == {f"p{k}": list(range(5)) for k in range(10)}
    await bus.close()


# --- packed messages (CJO_BUS_PACK_ROWS, cjo_platform.bus.packing) -----------------------

async def test_a_rounds_rows_of_a_subject_go_as_few_messages_each_once_in_order(
        prefix: str, box: Box) -> None:
    bus = Bus(bus_settings(prefix, partitions=2, pack_rows=8))
    sent = payloads(profiles=5, per_profile=20)
    await relay(bus, box, sent)
    assert box.queued(TOPIC) == 0
    messages = await stream_messages(bus)
    assert 100 / 8 <= messages <= 100 / 8 + 2  # packs of 8 per subject, not one per row
    # The same rows published again (a relay that crashed after the PubAck) get the same
    # message ids: the stream drops them.
    republish = bus_sender(bus, "tests", TOPIC, ordering_key=profile_of)
    assert await republish("acme", published_again(box, sent)) == []
    assert await stream_messages(bus) == messages

    receiver = Receiver()
    await consume(bus, box, receiver, len(sent))
    assert sorted(receiver.taken) == sorted(sent)  # each once
    assert receiver.by_profile() == {f"p{k}": list(range(20)) for k in range(5)}
    await bus.close()


def test_a_packs_message_id_is_its_rows_own() -> None:
    # A relay restarted after a crash may claim the rows with others and pack them otherwise:
    # that message must not be dropped as a duplicate of the first (its other rows would be
    # lost); its repeated rows reach the receiver again, which drops them by its own ids.
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def rows(*ids: int) -> list[OutboxRow]:
        return [OutboxRow(id=i, topic=TOPIC, workspace_id="acme", payload=b"x", traceparent="",
                          create_time=at) for i in ids]

    first = pack_message_id("p", TOPIC, rows(1, 2, 3))
    assert pack_message_id("p", TOPIC, rows(1, 2, 3)) == first
    others = {pack_message_id("p", TOPIC, rows(*ids))
              for ids in [(1, 2, 3, 4), (1, 2), (1, 3, 4), (1, 2, 4), (2, 3)]}
    assert first not in others and len(others) == 5


async def test_a_relay_publishes_one_message_per_row_unless_told_to_pack(
        prefix: str, box: Box) -> None:
    # The release that first reads packs does not publish them by default: during a rolling
    # upgrade a consumer of the previous release (which cannot read a pack, and would bury it
    # whole) may still receive what a new relay publishes.
    env = Env({"CJO_EVENT_BUS": NATS_URL, "CJO_BUS_PREFIX": prefix, "CJO_BUS_PARTITIONS": "1"})
    settings = load_bus_settings(env)
    assert settings is not None and env.errors == []
    bus = Bus(settings)
    await relay(bus, box, payloads(profiles=1, per_profile=3))
    assert await stream_messages(bus) == 3
    await bus.close()


async def test_single_row_messages_of_a_previous_release_are_read_beside_packed_ones(
        prefix: str, box: Box) -> None:
    old = payloads(profiles=2, per_profile=3)
    new = [f"p{i % 2}:{3 + i // 2}".encode() for i in range(6)]
    await relay(Bus(bus_settings(prefix, partitions=1, pack_rows=1)), box, old)
    bus = Bus(bus_settings(prefix, partitions=1))
    await relay(bus, box, new)
    assert await stream_messages(bus) == len(old) + 1
    receiver = Receiver()
    await consume(bus, box, receiver, 12)
    assert receiver.by_profile() == {"p0": list(range(6)), "p1": list(range(6))}
    await bus.close()


async def test_an_unreadable_packed_message_goes_to_the_dead_letters_and_the_rest_flow(
        prefix: str, box: Box) -> None:
    bus = Bus(bus_settings(prefix, partitions=1))
    stream = await bus.ensure_stream(TOPIC)
    js = await bus.jetstream()
    await js.publish(naming.subject(prefix, TOPIC, "acme", 0), b"\xc1 not msgpack",
                     stream=stream, headers={PACK_HEADER: "1", WORKSPACE_HEADER: "acme"})
    await relay(bus, box, [b"p0:0", b"p0:1"])

    class Strict(Receiver):
        async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]
                           ) -> list[Refusal]:
            self.refuse = frozenset(r.payload for r in rows if b":" not in r.payload)
            return await super().__call__(workspace_id, rows)

    receiver = Strict()
    await consume(bus, box, receiver, 2, letter=True)
    assert receiver.taken == [b"p0:0", b"p0:1"]
    [letter] = box.letters("acme")
    assert letter.payload == b"\xc1 not msgpack"
    await bus.close()


class Transient(Receiver):
    """Refuses ``busy`` payloads for now (transient), as well as ``refuse`` for good."""

    def __init__(self, refuse: frozenset[bytes], busy: frozenset[bytes]) -> None:
        super().__init__(refuse=refuse)
        self.busy = busy

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        busy = [Refusal(row, "UNAVAILABLE: busy", transient=True) for row in rows
                if row.payload in self.busy]
        return [*await super().__call__(workspace_id, [r for r in rows if r not in
                                                       [b.row for b in busy]]), *busy]


async def test_a_packed_rows_dead_letter_is_kept_once_when_its_message_comes_again(
        prefix: str, stored_box: Box) -> None:
    # A pack of ten: row 3 refused for good (buried), row 5 refused for now, so the message is
    # not acked. The consumer restarts: JetStream delivers the whole message again and row 3 is
    # refused again; the dead letters still hold it once.
    box = stored_box
    bus = Bus(bus_settings(prefix, partitions=1))
    sent = payloads(profiles=1, per_profile=10)
    await relay(bus, box, sent)
    assert await stream_messages(bus) == 1
    first = Transient(refuse=frozenset({sent[3]}), busy=frozenset({sent[5]}))
    consumer = BusConsumer(bus, TOPIC, first, box.db, box.dead_letters, ManualClock(),
                           item_key=lambda row: row.payload.decode())
    task = await running(consumer)
    try:
        await eventually(lambda: sent[4] in first.taken and len(box.letters("acme")) == 1,
                         timeout=20)
    finally:
        await stop(task)
    assert await stream_messages(bus) == 1

    again = Receiver(refuse=frozenset({sent[3]}))
    await consume(bus, box, again, 9, item_key=lambda row: row.payload.decode())
    assert [letter.item_key for letter in box.letters("acme")] == ["p0:3"]
    await bus.close()


async def test_a_pack_a_previous_release_buried_whole_is_replayed_as_its_rows(
        prefix: str, stored_box: Box) -> None:
    # A consumer of the release before packing reads a packed message as one row and buries
    # its bytes (with the first row's traceparent, no header). Retried after the upgrade, the
    # letter reaches the receiver as its rows, each with its own traceparent; a row's own
    # payload (not a pack) is replayed as it is.
    box = stored_box
    bus = Bus(bus_settings(prefix, partitions=1))
    receiver = Receiver(refuse=frozenset({b"p0:1"}))
    consumer = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock())
    trace = [f"00-{i:032x}-{i:016x}-01" for i in range(1, 4)]
    rows = [OutboxRow(id=i + 1, topic=TOPIC, workspace_id="acme", payload=f"p0:{i}".encode(),
                      traceparent=trace[i], create_time=datetime.now(UTC)) for i in range(3)]
    with box.db.transaction() as session:
        for payload, traceparent in [(pack(rows), trace[0]), (b"\x92\x01 p1:0", "")]:
            box.dead_letters.add(session, workspace_id="acme", source=consumer.name,
                                 item_key="", payload=payload, error="INVALID_ARGUMENT",
                                 traceparent=traceparent)
    replay = bus_replays(consumer)[consumer.name]
    with box.db.transaction() as session:
        letters = box.dead_letters.take(session, "acme", None)
        replay(UnitOfWork(session, box.outbox.clock, box.outbox), letters)
    assert box.queued(consumer.redelivery_topic) == 4

    seen: list[tuple[bytes, str]] = []

    async def receive(workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        seen.extend((row.payload, row.traceparent) for row in rows)
        return await receiver(workspace_id, rows)

    redelivery = Forwarder(box.db, box.outbox, consumer.redelivery_topic, receive)
    while await redelivery.drain_once():
        pass
    assert seen == [(b"p0:0", trace[0]), (b"p0:1", trace[1]), (b"p0:2", trace[2]),
                    (b"\x92\x01 p1:0", "")]
    # The refused row alone is back in the dead letters.
    [letter] = box.letters("acme")
    assert (letter.payload, letter.traceparent) == (b"p0:1", trace[1])
    await bus.close()
