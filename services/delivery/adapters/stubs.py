"""Client stubs of the services delivery calls, built in one place: grpc's generated
``*_pb2_grpc`` modules carry no type hints (only the messages have ``.pyi`` stubs), so the one
untyped call each needs is confined here."""

from __future__ import annotations

import grpc

from cjo.identity.v1 import identity_service_pb2_grpc


def identity(channel: grpc.aio.Channel) -> identity_service_pb2_grpc.IdentityServiceStub:
    return identity_service_pb2_grpc.IdentityServiceStub(channel)  # type: ignore[no-untyped-call]
