"""A step round's renders against the real content service (review rendercap): when one
person's data makes a template reach the render time limit, content skips the batch's other
renders of that version with a retryable status, so orchestration fails that person's step
alone and sends the others again at once (review rendercap2); skipped past its bound (one extra
pass per version), they are deferred (retried next round, each charged an attempt, bounded by
the retry policy) and the next round renders them."""

from __future__ import annotations

import grpc
import pytest

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as content_pb
from cjo.content.v1 import content_service_pb2_grpc as content_grpc
from cjo_content.bootstrap import build
from cjo_content.domain import templates
from cjo_orchestration.adapters.peers import Peers, RenderItem
from cjo_orchestration.domain.journeys import Channel
from cjo_orchestration.domain.orders import Deferred, Rejected
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from support import Backend, as_service, serving, settings_for

# Cheap when event.n is 0; about 100 ms a round otherwise: past the limit at n = 600.
HTML = ("<p>Hi</p>{% assign s = 'abcdefghijklmnop' %}" + "{% assign s = s | append: s %}" * 15
        + "{% for a in (1..event.n) %}{% assign t = s | split: 'a' | join: 'b' | size %}"
          "{% endfor %}")


async def test_one_slow_render_fails_alone_and_the_skipped_ones_render_next_round(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.4)
    app = build(settings_for("content", backend), Env({}), clock=ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = content_grpc.ContentServiceStub(channel)
        await stub.CreateContentItem(content_pb.CreateContentItemRequest(
            content_item=item_pb.ContentItem(key="d", email=item_pb.EmailTemplate(
                subject="s", html=HTML))), metadata=as_service("ws"))
        await stub.PublishContentItem(content_pb.PublishContentItemRequest(
            name="contentItems/d"), metadata=as_service("ws"))
        peers = Peers(settings_for("orchestration", backend, CJO_CONTENT_TARGET=address),
                      timeout=30.0)

        def item(i: int, n: int) -> RenderItem:
            return RenderItem(f"p{i}", "d", Channel.EMAIL, {}, {"n": n})

        cheap = [item(i, 0) for i in range(1, 10)]
        # The skipped ones are sent again at once, once, without the rejected one (review
        # rendercap2; once: review rendercap3): a second slow person of the version in the
        # call leaves them skipped, deferred to the next round.
        first = await peers.render("ws", [item(0, 600), item(10, 600), *cheap])
        assert all(isinstance(r, Rejected) and "render time limit" in r.detail
                   for r in first[:2]), first[:2]
        assert all(isinstance(r, Deferred) and "UNAVAILABLE" in r.detail
                   for r in first[2:]), first[2:]
        again = await peers.render("ws", cheap)  # the next round: the deferred ones alone
        assert all(isinstance(r, common_pb2.RenderedMessage) for r in again), again
        # Review rendercap2: a fast person behind another slow one in every round was skipped
        # (an attempt charged) each time until the retry policy gave up; now rendered.
        for round_ in range(3):
            got = await peers.render("ws", [item(20 + round_, 600), item(1, 0)])
            assert isinstance(got[0], Rejected), got
            assert isinstance(got[1], common_pb2.RenderedMessage), got
