"""Fixtures of the identity tests: identity served in-process on the test's backend, and a
recording stand-in for orchestration to forward events to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from identity_support import START, DecisioningRecorder, Identity, Recorder, serve_identity

from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dec_grpc
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_platform.clock import ManualClock
from support import Backend


@pytest.fixture
def decisioning() -> DecisioningRecorder:
    return DecisioningRecorder()


@pytest.fixture
async def recorder(decisioning: DecisioningRecorder) -> AsyncIterator[Recorder]:
    server = grpc.aio.server()
    recording = Recorder()
    orch_grpc.add_OrchestrationServiceServicer_to_server(recording, server)
    dec_grpc.add_DecisioningServiceServicer_to_server(decisioning, server)
    recording.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    yield recording
    await server.stop(None)


@pytest.fixture
async def identity(backend: Backend, recorder: Recorder) -> AsyncIterator[Identity]:
    """Identity on the test's backend, forwarding to ``recorder`` (never to whatever may be
    listening on orchestration's default port)."""
    async with serve_identity(backend, recorder, ManualClock(START)) as running:
        yield running
