"""A step round's batch of large messages against real gRPC stand-ins of content and delivery:
renders go out a hundred at a time and sends by payload bytes, so a round of 500 rendered
emails of a few hundred KB is never refused for its size (gRPC's limit on every cjo channel is
32 MiB); every item is answered and sent once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from orchestration_support import FakeContent, FakeDelivery, fake_server

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2_grpc as content_grpc
from cjo.delivery.v1 import delivery_service_pb2_grpc as delivery_grpc
from cjo_orchestration.adapters.peers import RENDER_CHUNK, Peers, RenderItem, SendItem
from cjo_orchestration.domain.journeys import Channel
from cjo_orchestration.domain.orders import Sent
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.config import Env
from cjo_platform.limits import MAX_CALL_PAYLOAD_BYTES
from cjo_platform.rpc.batch import chunks
from cjo_platform.rpc.client import MAX_MESSAGE_BYTES
from support import Backend, free_port, settings_for

ROUND = 500  # the default step batch
HTML = "<p>" + "x" * 100_000 + "</p>"  # ~100 KB: 500 of them are 50 MB, past gRPC's limit


class CountingContent(FakeContent):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.contexts: list[Any] = []  # each render's, as received

    async def BatchRenderContent(self, request: Any, context: Any) -> Any:
        self.calls.append(len(request.requests))
        self.contexts.extend(render.context for render in request.requests)
        return await super().BatchRenderContent(request, context)


class CountingDelivery(FakeDelivery):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    async def BatchSendMessages(self, request: Any, context: Any) -> Any:
        self.calls.append(request.ByteSize())
        return await super().BatchSendMessages(request, context)


@pytest.fixture
async def served(sqlite_backend: Backend
                 ) -> AsyncIterator[tuple[CountingContent, CountingDelivery, Peers]]:
    content, delivery = CountingContent(), CountingDelivery()
    content.items[("ws", "big")] = content_item_pb2.ContentItem(
        key="big", email=content_item_pb2.EmailTemplate(subject="Hi {{ profile.name }}",
                                                        html=HTML))
    async with fake_server(content, content_grpc.add_ContentServiceServicer_to_server,
                           free_port()) as content_target, \
            fake_server(delivery, delivery_grpc.add_DeliveryServiceServicer_to_server,
                        free_port()) as delivery_target:
        settings = settings_for("orchestration", sqlite_backend,
                                CJO_CONTENT_TARGET=content_target,
                                CJO_DELIVERY_TARGET=delivery_target)
        yield content, delivery, Peers(settings, timeout=30.0)


def test_the_default_step_batch_is_a_round_of_500() -> None:
    assert load_engine_settings(Env({})).step_batch == ROUND


async def test_a_round_of_500_large_emails_renders_and_sends_every_one(
        served: tuple[CountingContent, CountingDelivery, Peers]) -> None:
    content, delivery, peers = served
    assert ROUND * len(HTML) > MAX_MESSAGE_BYTES  # one call of the whole round would fail
    rendered = await peers.render("ws", [
        RenderItem(f"p{i}", "big", Channel.EMAIL, {"name": f"P{i}"}, {}) for i in range(ROUND)])
    assert all(isinstance(r, common_pb2.RenderedMessage) for r in rendered), rendered[:1]
    assert content.calls == [RENDER_CHUNK] * (ROUND // RENDER_CHUNK)
    answers = await peers.send("ws", [
        SendItem(f"e{i}:mail:0", f"p{i}", f"p{i}@example.com", message, "j1", f"e{i}")
        for i, message in enumerate(rendered)])
    assert all(isinstance(a, Sent) for a in answers), answers[:1]
    assert len(delivery.messages) == ROUND  # each once
    # Calls of at most a call's payload bytes (plus the items' framing), as few as that allows.
    assert max(delivery.calls) <= MAX_CALL_PAYLOAD_BYTES + 1024 * 40
    assert len(delivery.calls) <= ROUND * len(HTML) // (MAX_CALL_PAYLOAD_BYTES // 2)


def test_chunks_by_bytes_keep_order_and_send_a_large_item_alone() -> None:
    sizes = [3, 3, 3, 9, 1, 1, 1, 1]
    sliced = chunks(list(range(len(sizes))), 3, weight=lambda i: sizes[i], max_bytes=6)
    assert [list(c) for c in sliced] == [[0, 1], [2], [3], [4, 5, 6], [7]]
    assert [list(c) for c in chunks(list(range(5)), 2)] == [[0, 1], [2, 3], [4]]


async def test_each_item_reaches_content_and_delivery_with_its_own_data_and_a_bad_one_fails_alone(
        served: tuple[CountingContent, CountingDelivery, Peers]) -> None:
    content, delivery, peers = served
    content.items[("ws", "hi")] = content_item_pb2.ContentItem(
        key="hi", email=content_item_pb2.EmailTemplate(
            subject="Hi {{ profile.name }} {{ event.plan }}", html="<p>x</p>"))
    rendered = await peers.render("ws", [
        RenderItem("p0", "hi", Channel.EMAIL, {"name": "Ann", "tags": ["a"]}, {"plan": "pro"}),
        RenderItem("p1", "hi", Channel.EMAIL, {"name": object()}, {}),  # protobuf cannot carry
        RenderItem("p2", "hi", Channel.EMAIL, {"name": "Bo"}, {})])
    assert [r.email.subject if isinstance(r, common_pb2.RenderedMessage) else type(r).__name__
            for r in rendered] == ["Hi Ann pro", "Rejected", "Hi Bo "]
    answers = await peers.send("ws", [
        SendItem(f"e{i}:mail:0", f"p{i}", f"p{i}@example.com", rendered[i], "j1", f"e{i}",
                 topic="news") for i in (0, 2)])
    assert all(isinstance(a, Sent) for a in answers), answers
    assert sorted((m.recipient.profile_id, m.recipient.address, m.content.email.subject,
                   m.enrollment_id) for m in delivery.messages.values()) == [
        ("p0", "p0@example.com", "Hi Ann pro", "e0"), ("p2", "p2@example.com", "Hi Bo ", "e2")]


async def test_a_render_context_carries_traits_and_event_alike_even_when_empty(
        served: tuple[CountingContent, CountingDelivery, Peers]) -> None:
    content, _, peers = served
    content.items[("ws", "hi")] = content_item_pb2.ContentItem(
        key="hi", email=content_item_pb2.EmailTemplate(subject="Hi", html="<p>x</p>"))
    await peers.render("ws", [RenderItem("p0", "hi", Channel.EMAIL, {}, {}),
                              RenderItem("p1", "hi", Channel.EMAIL, {"name": "Bo"}, {"x": 1})])
    assert [(c.HasField("traits"), c.HasField("event")) for c in content.contexts] == [
        (True, True), (True, True)]
