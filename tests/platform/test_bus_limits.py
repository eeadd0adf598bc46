"""The event bus's limits against the real NATS JetStream: a row too large for a bus message
goes to the dead letters and every other row (of its workspace and the others) flows on; each
stream is capped in bytes, and a full stream keeps the rows in the outbox without holding up
other topics; a process whose CJO_BUS_PARTITIONS differs from its streams' refuses to start
them; a workspace id is a subject token only when all of it is one."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from nats.js.api import DiscardPolicy
from nats.js.errors import APIError
from nats_support import NATS_URL, nats_listening, stream_rows
from outbox_support import Box
from test_event_bus import (  # noqa: F401
    TOPIC,
    box,
    bus_settings,
    prefix,
    profile_of,
    stored_box,
)

from cjo_platform.bus import Bus, naming
from cjo_platform.bus.connection import BusSettingMismatch, load_bus_settings
from cjo_platform.bus.relay import bus_sender
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.outbox import Forwarder

pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")


async def drain(forwarder: Forwarder) -> None:
    while await asyncio.wait_for(forwarder.drain_once(), 30):
        pass


async def stored_rows(bus: Bus, topic: str = TOPIC) -> dict[str, list[bytes]]:
    """The rows the topic's stream holds, by workspace, in stream order (packs unpacked)."""
    return await stream_rows(bus, topic)


def by_profile(rows: list[bytes]) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for row in rows:
        found.setdefault(row.decode().split(":")[0], []).append(row)
    return found


@pytest.mark.parametrize("pack_rows", [1, 64])
async def test_a_row_too_large_for_the_bus_goes_to_the_dead_letters_and_the_rest_flow(
        prefix: str, stored_box: Box, pack_rows: int) -> None:  # noqa: F811
    # One row over the server's max_payload, one under it alone but over it with its headers
    # (the server would close the connection): each can never be published. They go to the
    # dead letters at once; the rows behind them, of their profile too, and the other
    # workspace's rows are published in order, and the outbox empties.
    bus = Bus(bus_settings(prefix, partitions=1, pack_rows=pack_rows))
    max_payload = (await bus.client()).max_payload
    big = b"p0:1" + b" " * max_payload
    edge = b"p1:0" + b" " * (max_payload - 4 - 40)
    clock = stored_box.outbox.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(seconds=1))
    stored_box.queue(TOPIC, "bigco", [b"p0:0", big, b"p0:2", edge, b"p1:1"])
    stored_box.queue(TOPIC, "acme", [b"p0:0", b"p1:0"])
    forwarder = Forwarder(stored_box.db, stored_box.outbox, TOPIC,
                          bus_sender(bus, "tests", TOPIC, ordering_key=profile_of))
    await drain(forwarder)
    assert stored_box.queued(TOPIC) == 0
    stored = await stored_rows(bus)
    assert {workspace: by_profile(rows) for workspace, rows in stored.items()} == {
        "bigco": {"p0": [b"p0:0", b"p0:2"], "p1": [b"p1:1"]},
        "acme": {"p0": [b"p0:0"], "p1": [b"p1:0"]}}
    letters = stored_box.letters("bigco")
    assert sorted(letter.payload for letter in letters) == [big, edge]
    assert all("max_payload" in letter.error and letter.source == f"outbox:{TOPIC}"
               for letter in letters)
    await bus.close()


async def test_a_workspace_id_with_a_trailing_newline_is_carried_hex_encoded(
        prefix: str, box: Box) -> None:  # noqa: F811
    # A newline in a subject would be refused by the client (or split the protocol line).
    assert naming.token("acme\n") == "~" + b"acme\n".hex()
    assert naming.token("acme") == "acme"
    bus = Bus(bus_settings(prefix, partitions=1, pack_rows=1))
    box.queue(TOPIC, "acme\n", [b"p0:0"])
    forwarder = Forwarder(box.db, box.outbox, TOPIC,
                          bus_sender(bus, "tests", TOPIC, ordering_key=profile_of))
    await drain(forwarder)
    assert await stored_rows(bus) == {"~" + b"acme\n".hex(): [b"p0:0"]}
    await bus.close()


async def relay_until_held(forwarder: Forwarder) -> None:
    """Publish until the round publishes nothing more (the stream refuses what is left)."""
    with contextlib.suppress(APIError):
        while await asyncio.wait_for(forwarder.drain_once(), 30):
            pass


async def take_all(bus: Bus) -> list[bytes]:
    """Consume (and ack) what partition 0 of the topic holds."""
    js = await bus.jetstream()
    stream, name = await bus.ensure_consumer(TOPIC, 0)
    sub = await js.pull_subscribe_bind(name, stream=stream)
    taken: list[bytes] = []
    while True:
        try:
            msgs = await sub.fetch(100, timeout=1)
        except TimeoutError:
            break
        for msg in msgs:
            taken.append(msg.data)
            await msg.ack_sync()
    await sub.unsubscribe()
    return taken


async def test_a_full_stream_keeps_the_rows_in_the_outbox_and_the_other_topics_flow(
        prefix: str, box: Box) -> None:  # noqa: F811
    # Nobody consumes the topic: its stream fills up to CJO_BUS_MAX_BYTES and refuses the next
    # messages (discard NEW: none it holds is dropped); the rows stay in the outbox. Another
    # topic of the same server still takes messages. Once a consumer took them, the relay
    # publishes the rest: every row once, each profile's in order.
    cap = 64 * 1024
    bus = Bus(bus_settings(prefix, partitions=1, pack_rows=1, max_bytes=cap))
    sent = [f"p{i % 4}:{i // 4:02}".encode() + b" " * 2000 for i in range(80)]
    clock = box.outbox.clock
    assert isinstance(clock, ManualClock)
    box.queue(TOPIC, "acme", sent)
    forwarder = Forwarder(box.db, box.outbox, TOPIC,
                          bus_sender(bus, "tests", TOPIC, ordering_key=profile_of))
    await relay_until_held(forwarder)
    js = await bus.jetstream()
    info = await js.stream_info(naming.stream_name(prefix, TOPIC))
    assert (info.config.max_bytes, info.config.discard) == (cap, DiscardPolicy.NEW)
    assert 0 < info.state.bytes <= cap
    assert 0 < box.queued(TOPIC) < len(sent)
    first = await stored_rows(bus)
    assert by_profile(first["acme"]) == {p: rows[:len(first_rows)] for p, rows
                                         in by_profile(sent).items()
                                         for first_rows in [by_profile(first["acme"])[p]]}

    other = "test.other"
    try:
        box.queue(other, "acme", [b"p0:0"])
        await drain(Forwarder(box.db, box.outbox, other, bus_sender(bus, "tests", other)))
        assert box.queued(other) == 0
    finally:
        await js.delete_stream(naming.stream_name(prefix, other))

    taken: list[bytes] = []
    for _ in range(10):
        taken += await take_all(bus)
        if box.queued(TOPIC) == 0:
            break
        clock.advance(timedelta(minutes=2))  # past the held rows' retry
        await relay_until_held(forwarder)
    assert box.queued(TOPIC) == 0
    assert by_profile(taken) == by_profile(sent)
    await bus.close()


def test_a_streams_cap_is_set_from_the_environment() -> None:
    env = Env({"CJO_EVENT_BUS": NATS_URL, "CJO_BUS_MAX_BYTES": str(1024 ** 2)})
    load_bus_settings(env)
    assert any("CJO_BUS_MAX_BYTES" in error for error in env.errors)
    env = Env({"CJO_EVENT_BUS": NATS_URL})
    settings = load_bus_settings(env)
    assert settings is not None and settings.max_bytes == 1024 ** 3 and not env.errors


async def test_a_process_with_other_partitions_than_its_streams_refuses_them(
        prefix: str, box: Box) -> None:  # noqa: F811
    # Its relay would publish a profile's events to another partition than the consumers
    # read (or its consumers read other partitions): the stream records the setting it was
    # made with, and a process with another one fails naming the setting; nothing is published.
    made = Bus(bus_settings(prefix, partitions=2))
    stream = await made.ensure_stream(TOPIC)
    other = Bus(bus_settings(prefix, partitions=4))
    with pytest.raises(BusSettingMismatch, match=r"CJO_BUS_PARTITIONS=4.* made with 2"):
        await other.ensure_stream(TOPIC)
    with pytest.raises(BusSettingMismatch):
        await other.ensure_consumer(TOPIC, 3)
    box.queue(TOPIC, "acme", [b"p0:0"])
    forwarder = Forwarder(box.db, box.outbox, TOPIC, bus_sender(other, "tests", TOPIC))
    with pytest.raises(BusSettingMismatch):
        await forwarder.drain_once()
    assert box.queued(TOPIC) == 1
    # The same setting, other limits: brought up to date.
    again = Bus(bus_settings(prefix, partitions=2, max_bytes=2 * 1024 * 1024))
    assert await again.ensure_stream(TOPIC) == stream
    js = await again.jetstream()
    assert (await js.stream_info(stream)).config.max_bytes == 2 * 1024 * 1024
    # A stream of a release that recorded nothing is taken over and records the setting.
    config = (await js.stream_info(stream)).config
    config.description = f"cjo outbox topic {TOPIC}"
    await js.update_stream(config)
    assert await Bus(bus_settings(prefix, partitions=4)).ensure_stream(TOPIC) == stream
    with pytest.raises(BusSettingMismatch, match="made with 4"):
        await Bus(bus_settings(prefix, partitions=2)).ensure_stream(TOPIC)
    for bus in (made, other, again):
        await bus.close()


async def test_a_stream_holding_more_than_the_cap_keeps_its_messages_until_it_drains(
        prefix: str) -> None:  # noqa: F811
    # A stream of a release without a cap (discard OLD) holds a backlog of 12 MiB (a receiver
    # stalled) when a process capped at 8 MiB starts: the server would delete the oldest
    # messages to fit at once. The cap waits until the stream holds at most half of it.
    old = Bus(bus_settings(prefix, partitions=1))
    stream = await old.ensure_stream(TOPIC)
    js = await old.jetstream()
    config = (await js.stream_info(stream)).config
    config.max_bytes, config.discard = -1, DiscardPolicy.OLD
    config.description = f"cjo outbox topic {TOPIC}"
    await js.update_stream(config)
    subject = naming.subject(prefix, TOPIC, "acme", 0)
    for i in range(192):
        await js.publish(subject, b"%03d" % i + b" " * (64 * 1024))
    held = (await js.stream_info(stream)).state
    assert held.messages == 192 and held.bytes > 12 * 1024 * 1024

    capped = Bus(bus_settings(prefix, partitions=1, max_bytes=8 * 1024 * 1024))
    assert await capped.ensure_stream(TOPIC) == stream
    info = await js.stream_info(stream)
    assert info.state.messages == 192, "messages no consumer took were deleted"
    assert info.config.max_bytes == -1 and info.config.discard == DiscardPolicy.NEW
    assert info.config.description == f"cjo outbox topic {TOPIC}, 1 partitions"

    # Drained (consumed): the next start applies the cap.
    await js.purge_stream(stream)
    again = Bus(bus_settings(prefix, partitions=1, max_bytes=8 * 1024 * 1024))
    await again.ensure_stream(TOPIC)
    assert (await js.stream_info(stream)).config.max_bytes == 8 * 1024 * 1024
    for bus in (old, capped, again):
        await bus.close()
