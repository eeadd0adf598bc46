"""Fixtures of the identity tests: identity served in-process on the test's backend, and a
recording stand-in for orchestration to forward events to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from identity_support import START, Identity, Recorder

from cjo.identity.v1 import identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_identity.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from support import Backend, serving, settings_for


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    server = grpc.aio.server()
    recording = Recorder()
    orch_grpc.add_OrchestrationServiceServicer_to_server(recording, server)
    recording.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    yield recording
    await server.stop(None)


@pytest.fixture
async def identity(backend: Backend, recorder: Recorder) -> AsyncIterator[Identity]:
    """Identity on the test's backend, forwarding to ``recorder`` (never to whatever may be
    listening on orchestration's default port)."""
    clock = ManualClock(START)
    settings = settings_for("identity", backend, CJO_ORCHESTRATION_TARGET=recorder.address)
    # The time worker looks for due profiles often: tests advance the clock, then wait.
    app = build(settings, Env({"CJO_IDENTITY_TIME_POLL_SECONDS": "0.05"}), clock=clock)
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        yield Identity(app, clock, identity_service_pb2_grpc.IdentityServiceStub(channel),
                       ws_grpc.WorkspaceServiceStub(channel))
