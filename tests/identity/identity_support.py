"""Helpers of the identity tests: a recording stand-in for orchestration, a handle on a running
identity service, and event builders."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from cjo.common.v1 import dead_letter_service_pb2_grpc as dl_grpc
from cjo.decisioning.v1 import decisioning_service_pb2 as dec_pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dec_grpc
from cjo.identity.v1 import (
    backfill_pb2,
    event_pb2,
    identity_service_pb2,
    identity_service_pb2_grpc,
    segment_pb2,
    workspace_pb2,
)
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_identity.adapters.tables import metadata, outbox, request_log
from cjo_identity.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.protobuf import dict_to_struct, to_timestamp
from cjo_platform.rpc.server import ServiceApp
from support import (
    PG_URL,
    SERVICE_TOKEN,
    Backend,
    bearer,
    eventually,
    operator_environ,
    serving,
    settings_for,
)

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Delivery:
    """One HandleEvents call the recorder accepted."""

    workspace_id: str
    authorization: str
    traceparent: str
    events: list[orch_pb.ForwardedEvent]


@dataclass
class Recorder(orch_grpc.OrchestrationServiceServicer):
    """Stands in for orchestration: records HandleEvents calls and acknowledges every item.
    The real orchestration service is exercised by the lead's end-to-end test."""

    address: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    failing: bool = False  # answer UNAVAILABLE, as a receiver that is down would
    refused: int = 0

    async def HandleEvents(self, request: orch_pb.HandleEventsRequest,
                           context: grpc.aio.ServicerContext) -> orch_pb.HandleEventsResponse:
        if self.failing:
            self.refused += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "orchestration is down")
        metadata = dict(context.invocation_metadata() or ())
        self.deliveries.append(Delivery(
            str(metadata.get("x-cjo-workspace", "")), str(metadata.get("authorization", "")),
            str(metadata.get("traceparent", "")), list(request.events)))
        ok = status_pb2.Status(code=code_pb2.OK)
        return orch_pb.HandleEventsResponse(
            results=[orch_pb.HandleEventResult(status=ok) for _ in request.events])

    @property
    def events(self) -> list[orch_pb.ForwardedEvent]:
        return [e for d in self.deliveries for e in d.events]


@dataclass
class DecisioningRecorder(dec_grpc.DecisioningServiceServicer):
    """Stands in for decisioning on the recorder's server: records RecordEvents calls (the
    track events and merges identity forwards for rewards) and acknowledges every item."""

    deliveries: list[Delivery] = field(default_factory=list)

    async def RecordEvents(self, request: dec_pb.RecordEventsRequest,
                           context: grpc.aio.ServicerContext) -> dec_pb.RecordEventsResponse:
        metadata = dict(context.invocation_metadata() or ())
        self.deliveries.append(Delivery(
            str(metadata.get("x-cjo-workspace", "")), str(metadata.get("authorization", "")),
            str(metadata.get("traceparent", "")), list(request.events)))
        ok = status_pb2.Status(code=code_pb2.OK)
        return dec_pb.RecordEventsResponse(
            results=[dec_pb.RecordEventResult(status=ok) for _ in request.events])

    @property
    def events(self) -> list[orch_pb.ForwardedEvent]:
        return [e for d in self.deliveries for e in d.events]


class EmptyDecisioning(dec_grpc.DecisioningServiceServicer):
    """Decisioning holding nothing about anyone (what `cjo profile export` reads of it)."""

    async def ListDecisions(self, request: dec_pb.ListDecisionsRequest,
                            context: grpc.aio.ServicerContext) -> dec_pb.ListDecisionsResponse:
        return dec_pb.ListDecisionsResponse()

    async def GetSendTimes(self, request: dec_pb.GetSendTimesRequest,
                           context: grpc.aio.ServicerContext) -> dec_pb.GetSendTimesResponse:
        return dec_pb.GetSendTimesResponse()


async def cli_profile_export(who: str, api_key: str, identity: str, decisioning: str,
                             config: Path, timeout: float = 120
                             ) -> subprocess.CompletedProcess[str]:
    """`cjo profile export WHO` run as an operator would, against ``identity`` and
    ``decisioning`` (addresses)."""
    env = {**operator_environ(), "CJO_API_KEY": api_key, "CJO_IDENTITY_TARGET": identity,
           "CJO_DECISIONING_TARGET": decisioning, "XDG_CONFIG_HOME": str(config)}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cjo_cli.main", "profile", "export", who],
        env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
        timeout=timeout)


@dataclass
class Identity:
    """A running identity service and stubs to call it."""

    app: ServiceApp
    clock: ManualClock
    events: identity_service_pb2_grpc.IdentityServiceStub
    workspaces: ws_grpc.WorkspaceServiceStub
    dead_letters: dl_grpc.DeadLetterServiceStub
    address: str = ""  # where it listens, for other services' clients

    async def new_workspace(self, workspace_id: str) -> Metadata:
        """Creates a workspace; returns call metadata carrying its first API key."""
        reply = await self.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id=workspace_id), metadata=bearer(SERVICE_TOKEN))
        return bearer(reply.api_key.secret)

    async def backfilled(self, metadata: Metadata,
                         segment_id: str) -> segment_pb2.Segment:
        """The segment once the time worker finished its backfill (members complete)."""
        async def done() -> segment_pb2.Segment | None:
            got = (await self.events.GetSegment(identity_service_pb2.GetSegmentRequest(
                name=f"segments/{segment_id}"), metadata=metadata)).segment
            return got if got.backfill.state == backfill_pb2.BACKFILL_STATE_DONE else None
        found = await eventually(done)
        assert isinstance(found, segment_pb2.Segment)
        return found

    async def outbox_rows(self) -> int:
        def count() -> int:
            with self.app.db.transaction() as session:
                return int(session.execute(select(func.count()).select_from(outbox)).scalar_one())
        return await self.app.db.run(count)


@asynccontextmanager
async def serve_identity(backend: Backend, recorder: Recorder, clock: ManualClock,
                         **env: str) -> AsyncIterator[Identity]:
    """An identity process (a replica, when called again on the same backend) forwarding to
    ``recorder``; its time worker looks for due profiles often (tests advance the clock, then
    wait), unless ``env`` says otherwise."""
    # The recorder's server plays decisioning too (DecisioningRecorder), never whatever may be
    # listening on decisioning's default port.
    settings = settings_for("identity", backend, CJO_ORCHESTRATION_TARGET=recorder.address,
                            CJO_DECISIONING_TARGET=recorder.address)
    app = build(settings, Env({"CJO_IDENTITY_TIME_POLL_SECONDS": "0.05", **env}), clock=clock)
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        yield Identity(app, clock, identity_service_pb2_grpc.IdentityServiceStub(channel),
                       ws_grpc.WorkspaceServiceStub(channel),
                       dl_grpc.DeadLetterServiceStub(channel), address)


def event(message_id: str, *identifiers: tuple[str, str], name: str = "page_viewed",
          traits: dict[str, object] | None = None, at: datetime | None = None,
          identify: bool = False) -> event_pb2.Event:
    """A track event (or an identify call) with the given (type, value) identifiers."""
    struct = struct_pb2.Struct()
    struct.update(traits or {})
    return event_pb2.Event(
        message_id=message_id,
        type=event_pb2.EVENT_TYPE_IDENTIFY if identify else event_pb2.EVENT_TYPE_TRACK,
        name="" if identify else name,
        identifiers=[event_pb2.Identifier(type=t, value=v) for t, v in identifiers],
        traits=struct, timestamp=to_timestamp(at), source="web")


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error a call fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# Publishable keys and identity verification (test_publishable_keys and
# test_identity_verification_secret).
SECRET = "s" * 40


def identifier(kind: str, value: str, proof: str = "") -> event_pb2.Identifier:
    return event_pb2.Identifier(type=kind, value=value, verification_hash=proof)


def sent(message_id: str, *identifiers: event_pb2.Identifier, name: str = "",
         source: str = "web", **traits: str) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=message_id, name=name, source=source, identifiers=identifiers,
        type=event_pb2.EVENT_TYPE_TRACK if name else event_pb2.EVENT_TYPE_IDENTIFY,
        traits=dict_to_struct(traits),
        properties=dict_to_struct({"channel": "email"} if "subscribed" in name else {}))


async def publishable(identity: Identity, admin: Metadata) -> tuple[Metadata, str]:
    """Call metadata carrying a new publishable (ingest-only) key, and its id."""
    key = (await identity.workspaces.CreateApiKey(ws_pb.CreateApiKeyRequest(
        display_name="web", scope=workspace_pb2.API_KEY_SCOPE_INGEST), metadata=admin)).api_key
    return bearer(key.secret), key.key_id


async def ingest(identity: Identity, metadata: Metadata, *events: event_pb2.Event
                 ) -> list[identity_service_pb2.IngestEventResult]:
    reply = await identity.events.IngestEvents(
        identity_service_pb2.IngestEventsRequest(events=events), metadata=metadata)
    return list(reply.results)


@contextmanager
def backend_transactions(backend: Backend) -> Iterator[Transactions]:
    """Identity's use-cases' units of work on the test's backend (a schema of its own on
    PostgreSQL, dropped afterwards), on a manual clock at START."""
    if backend.kind == "postgresql":
        db = Database(PG_URL, schema=backend.schema_prefix + "identity")
        db.create_schema()
    else:
        backend.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(f"sqlite:///{backend.data_dir}/identity.db")
    metadata.create_all(db.engine)
    clock = ManualClock(START)
    try:
        yield Transactions(db, clock, Outbox(outbox, clock), RequestLog(request_log, clock))
    finally:
        if backend.kind == "postgresql":
            db.drop_schema()
        db.engine.dispose()


@contextmanager
def recorded(tx: Transactions) -> Iterator[list[str]]:
    """The statements sent to the database meanwhile, whitespace collapsed."""
    statements: list[str] = []

    def executed(conn: object, cursor: object, statement: str, *rest: object) -> None:
        statements.append(" ".join(statement.split()))

    sa_event.listen(tx.db.engine, "before_cursor_execute", executed)
    try:
        yield statements
    finally:
        sa_event.remove(tx.db.engine, "before_cursor_execute", executed)
