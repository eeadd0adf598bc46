"""The in-app inbox: in-app messages land in the profile's inbox, are listed, marked read or
dismissed, and reach a live SubscribeInbox stream as they arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import grpc
import pytest
from delivery_support import delivery_app

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import inbox_pb2, message_pb2
from cjo_delivery.api import inbox as inbox_api
from cjo_delivery.domain.inbox import InboxMessage
from cjo_platform.clock import ManualClock
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
OTHER = as_service("ws-b")


def in_app(key: str, title: str, profile_id: str = "p1") -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        idempotency_key=key, recipient=message_pb2.Recipient(profile_id=profile_id),
        content=common_pb2.RenderedMessage(
            channel=common_pb2.CHANNEL_IN_APP,
            in_app=common_pb2.RenderedInApp(title=title, body="Tap to see", buttons=[
                common_pb2.InAppButton(label="Open", link="acme://offers")])))


@asynccontextmanager
async def subscribed(stub: pb_grpc.DeliveryServiceStub
                     ) -> AsyncIterator[list[inbox_pb2.InboxMessage]]:
    """The messages p1's SubscribeInbox streams, as they come; subscribed once entered."""
    stream = stub.SubscribeInbox(pb.SubscribeInboxRequest(profile_id="p1"), metadata=WS)
    received: list[inbox_pb2.InboxMessage] = []

    async def read() -> None:
        async for item in stream:
            received.append(item.message)

    reader = asyncio.create_task(read())
    await stream.initial_metadata()  # the starting point is fixed
    yield received
    stream.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_the_inbox_lists_marks_and_streams_new_messages(backend: Backend) -> None:
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        first = (await stub.SendMessage(in_app("k1", "Welcome"), metadata=WS)).message

        async def listed(**kw: object) -> list[inbox_pb2.InboxMessage]:
            return list((await stub.ListInboxMessages(pb.ListInboxMessagesRequest(
                profile_id="p1", **kw), metadata=WS)).messages)  # type: ignore[arg-type]

        await eventually(listed)
        async with subscribed(stub) as received:  # the existing message is not streamed
            clock.advance(timedelta(seconds=1))
            await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                in_app("k2", "20% off"), in_app("k3", "Not yours", profile_id="p2"),
                in_app("k4", "Last chance")]), metadata=WS)
            await eventually(lambda: len(received) == 2, timeout=5)
        assert sorted(m.content.title for m in received) == ["20% off", "Last chance"]
        assert received[0].state == inbox_pb2.INBOX_STATE_UNREAD
        assert received[0].content.buttons[0].link == "acme://offers"

        sent = (await stub.GetMessage(pb.GetMessageRequest(name=first.name),
                                      metadata=WS)).message
        assert sent.status == message_pb2.MESSAGE_STATUS_SENT
        assert [m.content.title for m in await listed()][-1] == "Welcome"
        read_one = (await stub.MarkInboxMessage(pb.MarkInboxMessageRequest(
            name=f"inboxMessages/{first.message_id}", state=inbox_pb2.INBOX_STATE_READ),
            metadata=WS)).message
        assert read_one.state == inbox_pb2.INBOX_STATE_READ
        await stub.MarkInboxMessage(pb.MarkInboxMessageRequest(
            name=received[0].name, state=inbox_pb2.INBOX_STATE_DISMISSED), metadata=WS)
        assert len(await listed()) == 2
        assert len(await listed(include_dismissed=True)) == 3
        page = await stub.ListInboxMessages(pb.ListInboxMessagesRequest(
            profile_id="p1", page_size=1), metadata=WS)
        assert len(page.messages) == 1 and page.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await stub.MarkInboxMessage(pb.MarkInboxMessageRequest(
                name=read_one.name, state=inbox_pb2.INBOX_STATE_READ), metadata=OTHER)
        assert other.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_stream_starts_after_every_message_of_the_newest_time_and_pages_ties(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small pages, so runs of one create_time longer than a page are exercised; frequent
    # polls, so the stream reads again many times while nothing new arrives.
    monkeypatch.setattr(inbox_api, "_STREAM_BATCH", 2)
    monkeypatch.setattr(inbox_api, "POLL_SECONDS", 0.05)
    reads: list[tuple[Any, ...]] = []  # the stream's reads, counted
    read_after = inbox_api.inbox.read_after

    def counted(*args: Any) -> list[InboxMessage]:
        reads.append(args)
        return read_after(*args)

    monkeypatch.setattr(inbox_api.inbox, "read_after", counted)
    clock = ManualClock()  # not advanced: one batch's messages share one create_time
    app = delivery_app(backend, free_port(), clock)
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
            in_app(f"old{n}", f"old {n}") for n in range(5)]), metadata=WS)

        async def listed() -> bool:
            return len((await stub.ListInboxMessages(pb.ListInboxMessagesRequest(
                profile_id="p1"), metadata=WS)).messages) == 5

        await eventually(listed)
        async with subscribed(stub) as received:
            # The same create_time as the messages before the subscription, then a later one.
            await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                in_app(f"tie{n}", f"tie {n}") for n in range(5)]), metadata=WS)
            await eventually(lambda: len(received) >= 5, timeout=10)
            clock.advance(timedelta(seconds=1))
            await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                in_app(f"new{n}", f"new {n}") for n in range(5)]), metadata=WS)
            await eventually(lambda: len(received) >= 10, timeout=10)
            # Polls and a wake-up more: a last message arrives after them, and nothing else.
            later = len(reads) + 3
            await eventually(lambda: len(reads) >= later, timeout=10)
            clock.advance(timedelta(seconds=1))
            await stub.SendMessage(in_app("last", "last"), metadata=WS)
            await eventually(lambda: any(m.content.title == "last" for m in received))
    assert [m.content.title for m in received[10:]] == ["last"]
    # Each once, the ties (in any order: they land at any time, with any id) before the later.
    assert sorted(m.content.title for m in received[:5]) == [f"tie {n}" for n in range(5)]
    assert sorted(m.content.title for m in received[5:10]) == [f"new {n}" for n in range(5)]
    assert len({m.message_id for m in received}) == 11
    times = [m.create_time.ToDatetime() for m in received]
    assert times == sorted(times) and times[4] < times[5]


async def test_an_in_app_message_reaches_its_profile_whatever_address_it_carries(
        backend: Backend) -> None:
    """Orchestration addresses in-app sends "-" (the profile is the address): the message is
    still the profile's, in its inbox, never in an inbox of "-"."""
    app = delivery_app(backend, free_port())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        request = in_app("journey-step", "From a journey")
        request.recipient.address = "-"
        sent = (await stub.SendMessage(request, metadata=WS)).message
        assert sent.recipient.address == "p1"

        async def inbox(profile_id: str) -> list[inbox_pb2.InboxMessage]:
            return list((await stub.ListInboxMessages(pb.ListInboxMessagesRequest(
                profile_id=profile_id), metadata=WS)).messages)

        listed = await eventually(lambda: inbox("p1"))
        assert [m.content.title for m in listed] == ["From a journey"]  # type: ignore[attr-defined]
        assert await inbox("-") == []
