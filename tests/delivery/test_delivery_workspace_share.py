"""A workspace whose provider answers slowly, and successfully (no breaker opens), holds only
its share of the process's send slots and none of its rounds: another workspace's message,
queued behind its backlog, goes out while every one of its calls is still under way (review
hdeliv: 24 slow webhooks of one workspace took every slot, and the other's message waited for
them). Nothing of the slow workspace is lost: its messages go once its provider answers."""

from __future__ import annotations

import threading

import grpc
from delivery_support import delivery_app
from http_sink import Answer, HttpSink, Request, http_sink

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from support import Backend, as_service, eventually, free_port, serving

SLOW, OTHER = as_service("ws-share-slow"), as_service("ws-share-other")
SENT = message_pb2.MESSAGE_STATUS_SENT


def hook(key: str) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        idempotency_key=key, recipient=message_pb2.Recipient(profile_id=key, address="crm"),
        content=common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_WEBHOOK,
                                           webhook=common_pb2.RenderedWebhook(json_body="{}")))


async def test_slow_workspace_holds_only_its_share(backend: Backend) -> None:
    answer = threading.Event()

    def slow(request: Request) -> Answer:
        answer.wait(60)
        return Answer(200)
    with http_sink(HttpSink(default=slow)) as slow_sink, \
            http_sink(HttpSink(default=lambda r: Answer(200))) as fast_sink:
        # 8 slots, a workspace's share a quarter (CJO_DELIVERY_WORKSPACE_SHARE's default): one
        # workspace holds at most 6 while 2 stay free.
        app = delivery_app(backend, free_port(), CJO_DELIVERY_CONCURRENCY="8")
        try:
            async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.DeliveryServiceStub(channel)
                for md, url in ((SLOW, slow_sink.url), (OTHER, fast_sink.url)):
                    await stub.CreateProvider(pb.CreateProviderRequest(
                        provider=provider_pb2.Provider(
                            channel=common_pb2.CHANNEL_WEBHOOK,
                            kind=provider_pb2.PROVIDER_KIND_WEBHOOK,
                            config={"url": url + "/h", "timeout_seconds": "60"},
                            secrets={"signing_secret": "s"})), metadata=md)

                async def status(name: str, md: object) -> int:
                    return (await stub.GetMessage(pb.GetMessageRequest(name=name),
                                                  metadata=md)).message.status
                slow_names = [(await stub.SendMessage(hook(f"a{i}"), metadata=SLOW)).message.name
                              for i in range(24)]

                async def slow_calls() -> bool:
                    return slow_sink.count() >= 4  # calls under way
                await eventually(slow_calls, timeout=30)
                name = (await stub.SendMessage(hook("b"), metadata=OTHER)).message.name

                async def other_sent() -> bool:
                    return await status(name, OTHER) == SENT
                await eventually(other_sent, timeout=20)
                assert not answer.is_set()
                assert slow_sink.count() <= 6, "the slow workspace held more than 8 - 2 slots"
                answer.set()

                async def all_sent() -> bool:
                    return all([await status(n, SLOW) == SENT for n in slow_names])
                await eventually(all_sent, timeout=60)
                assert slow_sink.count() == 24
        finally:
            answer.set()
