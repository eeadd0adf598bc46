"""Shared by the decisioning tests: a DecisioningService on a real gRPC server, beside a real
content service, and helpers to define actions and points and read errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_status import rpc_status

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as content_pb
from cjo.content.v1 import content_service_pb2_grpc as content_grpc
from cjo.decisioning.v1 import action_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as pb_grpc
from cjo_content.bootstrap import build as build_content
from cjo_decisioning.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.rpc.status import error_reason, field_violations
from support import Backend, as_service, serving, settings_for

A = as_service("ws-a")
B = as_service("ws-b")
EMAIL = common_pb2.CHANNEL_EMAIL
SMS = common_pb2.CHANNEL_SMS


@dataclass
class Services:
    decisioning: pb_grpc.DecisioningServiceStub
    content: content_grpc.ContentServiceStub
    clock: ManualClock


@asynccontextmanager
async def decisioning_service(backend: Backend, clock: ManualClock | None = None,
                              env: dict[str, str] | None = None,
                              **overrides: str) -> AsyncIterator[Services]:
    """Decisioning and content on real servers (identity where a test gives its target)."""
    clock = clock or ManualClock()
    content_app = build_content(settings_for("content", backend), Env({}), clock=clock)
    async with serving(content_app) as content_address, \
            grpc.aio.insecure_channel(content_address) as content_channel:
        settings = settings_for("decisioning", backend, CJO_CONTENT_TARGET=content_address,
                                **overrides)
        app = build(settings, Env(env or {}), clock=clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
            yield Services(pb_grpc.DecisioningServiceStub(channel),
                           content_grpc.ContentServiceStub(channel=content_channel), clock)


async def add_content(services: Services, key: str, metadata: Any = A) -> None:
    await services.content.CreateContentItem(content_pb.CreateContentItemRequest(
        content_item=item_pb.ContentItem(key=key, email=item_pb.EmailTemplate(
            subject="Hi", html="<p>Hello {{ profile.first_name }}</p>"))), metadata=metadata)


def action(key: str, **fields: Any) -> action_pb2.Action:
    return action_pb2.Action(key=key, **fields)


def point(key: str, actions: list[str], **fields: Any) -> decision_point_pb2.DecisionPoint:
    fields.setdefault("reward", decision_point_pb2.Reward(event_name="order_completed"))
    return decision_point_pb2.DecisionPoint(key=key, actions=actions, **fields)


def days(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=n * 86400)


async def create_action(stub: pb_grpc.DecisioningServiceStub, a: action_pb2.Action,
                        metadata: Any = A) -> action_pb2.Action:
    reply = await stub.CreateAction(pb.CreateActionRequest(action=a), metadata=metadata)
    return reply.action


async def create_point(stub: pb_grpc.DecisioningServiceStub,
                       p: decision_point_pb2.DecisionPoint,
                       metadata: Any = A) -> decision_point_pb2.DecisionPoint:
    reply = await stub.CreateDecisionPoint(pb.CreateDecisionPointRequest(decision_point=p),
                                           metadata=metadata)
    return reply.decision_point


def refused(info: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> tuple[grpc.StatusCode, str,
                                                                       dict[str, str]]:
    """(code, ErrorInfo reason, field violations) of a failed call."""
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert status is not None
    return info.value.code(), error_reason(status), field_violations(status)
