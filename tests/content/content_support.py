"""Shared by the content service tests: a ContentService on a real gRPC server, and helpers to
create, publish and inspect items and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from grpc_status import rpc_status

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as pb
from cjo.content.v1 import content_service_pb2_grpc as pb_grpc
from cjo_content.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, serving, settings_for

A = as_service("ws-a")
B = as_service("ws-b")
EMAIL = common_pb2.CHANNEL_EMAIL

WELCOME = item_pb.EmailTemplate(
    subject="Welcome, {{ profile.first_name }}!",
    preheader="Your {{ event.plan }} plan is ready",
    html=('<html><body><h1>Hi {{ profile.first_name }}</h1>'
          '<p>Thanks for choosing <b>{{ event.plan }}</b>.</p>'
          '<p><a href="{{ event.url }}">Open your account</a></p></body></html>'),
)


@asynccontextmanager
async def content_service(backend: Backend, clock: ManualClock | None = None,
                          ) -> AsyncIterator[pb_grpc.ContentServiceStub]:
    app = build(settings_for("content", backend), Env({}), clock=clock or ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        yield pb_grpc.ContentServiceStub(channel)


def new_item(key: str, email: item_pb.EmailTemplate = WELCOME,
             **fields: Any) -> item_pb.ContentItem:
    return item_pb.ContentItem(key=key, email=email, **fields)


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def render_request(key: str, traits: dict[str, Any] | None = None,
                   event: dict[str, Any] | None = None, channel: int = EMAIL,
                   name: str | None = None) -> pb.RenderContentRequest:
    return pb.RenderContentRequest(
        name=name if name is not None else f"contentItems/{key}", channel=channel,
        context=pb.RenderContext(profile_id="p1", traits=struct(traits or {}),
                                 event=struct(event or {})))


async def create(stub: pb_grpc.ContentServiceStub, item: item_pb.ContentItem,
                 metadata: tuple[tuple[str, str], ...] = A,
                 request_id: str = "", publish: bool = False) -> item_pb.ContentItem:
    reply = await stub.CreateContentItem(
        pb.CreateContentItemRequest(content_item=item, request_id=request_id), metadata=metadata)
    if publish:
        await stub.PublishContentItem(pb.PublishContentItemRequest(name=reply.content_item.name),
                                      metadata=metadata)
    return reply.content_item


async def publish(stub: pb_grpc.ContentServiceStub, key: str,
                  metadata: tuple[tuple[str, str], ...] = A) -> item_pb.ContentVersion:
    reply = await stub.PublishContentItem(
        pb.PublishContentItemRequest(name=f"contentItems/{key}"), metadata=metadata)
    return reply.content_version


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return field_violations(rpc_status.from_call(error))


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


