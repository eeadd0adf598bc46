"""A server stream is held to its key for as long as it lasts: revoking the key that opened a
SubscribeInbox ends the stream with UNAUTHENTICATED within CJO_API_KEY_CACHE_SECONDS, while a
stream of a key still valid keeps delivering across its checks. Real identity and delivery
servers; delivery checks the key through identity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import grpc

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo.identity.v1 import workspace_pb2
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_delivery.bootstrap import build as build_delivery
from cjo_identity.bootstrap import build as build_identity
from cjo_platform.config import Env
from support import SERVICE_TOKEN, Backend, as_service, bearer, free_port, serving, settings_for

CACHE_SECONDS = 1.0


@asynccontextmanager
async def identity_and_delivery(backend: Backend
                                ) -> AsyncIterator[tuple[grpc.aio.Channel, grpc.aio.Channel]]:
    identity_port = free_port()
    nowhere = f"127.0.0.1:{free_port()}"
    peers = {"CJO_IDENTITY_TARGET": f"127.0.0.1:{identity_port}",
             **{f"CJO_{name}_TARGET": nowhere
                for name in ("CONTENT", "DELIVERY", "ANALYTICS", "DECISIONING",
                             "ORCHESTRATION")},
             "CJO_API_KEY_CACHE_SECONDS": str(CACHE_SECONDS)}
    identity = build_identity(settings_for(
        "identity", backend, **{**peers, "CJO_IDENTITY_PORT": str(identity_port)}), Env({
            "CJO_IDENTITY_FORWARD_TO_DECISIONING": "false"}))
    delivery = build_delivery(settings_for("delivery", backend, **peers), Env({
        "CJO_SMTP_PORT": str(free_port()), "CJO_DELIVERY_TRACKING_PORT": "0",
        "CJO_DELIVERY_CHECK_CONSENT": "false"}))
    async with AsyncExitStack() as stack:
        channels = []
        for app in (identity, delivery):
            address = await stack.enter_async_context(serving(app))
            channels.append(await stack.enter_async_context(grpc.aio.insecure_channel(address)))
        yield channels[0], channels[1]


def in_app(key: str) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        idempotency_key=key, recipient=message_pb2.Recipient(profile_id="p1"),
        content=common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_IN_APP,
                                           in_app=common_pb2.RenderedInApp(title=key)))


class Subscription:
    """A SubscribeInbox stream read in the background: the titles it got, and how it ended."""

    def __init__(self, stub: pb_grpc.DeliveryServiceStub, secret: str) -> None:
        self.call = stub.SubscribeInbox(pb.SubscribeInboxRequest(profile_id="p1"),
                                        metadata=bearer(secret))
        self.titles: list[str] = []
        self.new = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> grpc.StatusCode:
        try:
            async for item in self.call:
                self.titles.append(item.message.content.title)
                self.new.set()
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    async def got(self, title: str) -> None:
        while title not in self.titles:
            self.new.clear()
            assert not self.reader.done(), (self.titles, self.reader.result())
            await asyncio.wait_for(self.new.wait(), 10)


async def test_revoking_a_key_ends_the_inbox_streams_it_opened(backend: Backend) -> None:
    async with identity_and_delivery(backend) as (identity, delivery):
        keys = ws_grpc.WorkspaceServiceStub(identity)
        acme = await keys.CreateWorkspace(ws_pb.CreateWorkspaceRequest(workspace_id="acme"),
                                          metadata=bearer(SERVICE_TOKEN))
        admin = bearer(acme.api_key.secret)

        async def read_key(name: str) -> workspace_pb2.ApiKey:
            return (await keys.CreateApiKey(ws_pb.CreateApiKeyRequest(
                display_name=name, scope=workspace_pb2.API_KEY_SCOPE_READ),
                metadata=admin)).api_key

        doomed, kept = await read_key("leaked"), await read_key("kept")
        stub = pb_grpc.DeliveryServiceStub(delivery)
        leaked, live = Subscription(stub, doomed.secret), Subscription(stub, kept.secret)
        await leaked.call.initial_metadata()
        await live.call.initial_metadata()
        await stub.SendMessage(in_app("before"), metadata=as_service("acme"))
        await leaked.got("before")
        await live.got("before")

        await keys.RevokeApiKey(ws_pb.RevokeApiKeyRequest(name=doomed.name), metadata=admin)
        started = asyncio.get_running_loop().time()
        # Idle (nothing is sent to p1 meanwhile), the stream still ends on time.
        code = await asyncio.wait_for(leaked.reader, CACHE_SECONDS * 2 + 5)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert asyncio.get_running_loop().time() - started <= CACHE_SECONDS * 2 + 1

        # The valid key's stream was checked again meanwhile and still delivers.
        await stub.SendMessage(in_app("after"), metadata=as_service("acme"))
        await live.got("after")
        assert leaked.titles == ["before"]
        assert not live.reader.done()
        live.call.cancel()
