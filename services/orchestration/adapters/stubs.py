"""Client stubs of the services orchestration calls, built in one place: grpc's generated
``*_pb2_grpc`` modules carry no type hints (only the messages have ``.pyi`` stubs), so the one
untyped call each needs is confined here."""

from __future__ import annotations

import grpc

from cjo.content.v1 import content_service_pb2_grpc
from cjo.decisioning.v1 import decisioning_service_pb2_grpc
from cjo.delivery.v1 import delivery_service_pb2_grpc
from cjo.identity.v1 import identity_service_pb2_grpc
from cjo.orchestration.v1 import orchestration_service_pb2_grpc


def content(channel: grpc.aio.Channel) -> content_service_pb2_grpc.ContentServiceStub:
    return content_service_pb2_grpc.ContentServiceStub(channel)  # type: ignore[no-untyped-call]


def decisioning(
        channel: grpc.aio.Channel) -> decisioning_service_pb2_grpc.DecisioningServiceStub:
    return decisioning_service_pb2_grpc.DecisioningServiceStub(  # type: ignore[no-untyped-call]
        channel)


def delivery(channel: grpc.aio.Channel) -> delivery_service_pb2_grpc.DeliveryServiceStub:
    return delivery_service_pb2_grpc.DeliveryServiceStub(channel)  # type: ignore[no-untyped-call]


def identity(channel: grpc.aio.Channel) -> identity_service_pb2_grpc.IdentityServiceStub:
    return identity_service_pb2_grpc.IdentityServiceStub(channel)  # type: ignore[no-untyped-call]


def orchestration(
        channel: grpc.aio.Channel) -> orchestration_service_pb2_grpc.OrchestrationServiceStub:
    return orchestration_service_pb2_grpc.OrchestrationServiceStub(  # type: ignore[no-untyped-call]
        channel)
