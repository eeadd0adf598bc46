"""The harness of the provider webhook tests: delivery with its engagement listener, an SMTP
sink, a gRPC stand-in for identity that records engagement events, and HTTP to post reports."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
from delivery_support import (
    IdentityStandIn,
    SmtpSink,
    delivery_app,
    identity_stand_in,
    send_request,
    smtp_server,
)
from sqlalchemy import func, select

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo.identity.v1 import identity_service_pb2
from cjo_delivery.adapters.engagement_http import EngagementListener
from cjo_delivery.adapters.tables import outbox
from cjo_platform.clock import ManualClock
from cjo_platform.rpc.server import ServiceApp
from cjo_platform.rpc.status import OK
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
SENT = message_pb2.MESSAGE_STATUS_SENT
DELIVERED = message_pb2.MESSAGE_STATUS_DELIVERED
BOUNCED = message_pb2.MESSAGE_STATUS_BOUNCED
SUPPRESSED = message_pb2.MESSAGE_STATUS_SUPPRESSED


class IdentityWithEvents(IdentityStandIn):
    """Records the engagement events delivery forwards: (event id, name, properties,
    identifiers, profile id)."""

    def __init__(self) -> None:
        super().__init__(set())
        self.events: list[tuple[str, str, dict[str, Any], list[tuple[str, str]], str]] = []

    async def IngestEvents(self, request: identity_service_pb2.IngestEventsRequest,
                           context: grpc.aio.ServicerContext
                           ) -> identity_service_pb2.IngestEventsResponse:
        for e in request.events:
            self.events.append((e.message_id, e.name, dict(e.properties.items()),
                                [(i.type, i.value) for i in e.identifiers], e.profile_id))
        return identity_service_pb2.IngestEventsResponse(results=[
            identity_service_pb2.IngestEventResult(status=OK) for _ in request.events])

    def names(self) -> list[str]:
        return [e[1] for e in self.events]


@dataclass
class Harness:
    app: ServiceApp
    stub: pb_grpc.DeliveryServiceStub
    web: httpx.AsyncClient
    sink: SmtpSink
    identity: IdentityWithEvents
    clock: ManualClock
    tracking_port: int
    sink_port: int
    identity_target: str

    async def create(self, provider: provider_pb2.Provider) -> provider_pb2.Provider:
        request = pb.CreateProviderRequest(provider=provider)
        return (await self.stub.CreateProvider(request, metadata=WS)).provider

    async def message(self, message_id: str) -> message_pb2.Message:
        return (await self.stub.GetMessage(pb.GetMessageRequest(name=f"messages/{message_id}"),
                                           metadata=WS)).message

    async def send(self, request: pb.SendMessageRequest) -> str:
        """Sends and waits until the provider took it; cjo's message id."""
        name = (await self.stub.SendMessage(request, metadata=WS)).message.name
        message_id = name.removeprefix("messages/")

        async def settled() -> bool:
            return (await self.message(message_id)).status not in (
                message_pb2.MESSAGE_STATUS_QUEUED, message_pb2.MESSAGE_STATUS_SENDING)

        await eventually(settled)
        return message_id

    async def send_email(self, key: str, address: str = "ada@example.com") -> str:
        message_id = await self.send(send_request(key, address))
        assert (await self.message(message_id)).status == SENT
        return message_id

    async def status(self, message_id: str) -> int:
        return (await self.message(message_id)).status

    def engagement_rows(self) -> int:
        """Engagement events waiting for identity or sent to it (the outbox keeps them)."""
        with self.app.db.transaction() as session:
            return int(session.execute(select(func.count()).select_from(outbox).where(
                outbox.c.topic == "identity.events")).scalar_one())

    async def engagement_recorded(self) -> int:
        """Engagement events recorded, counted once the outbox handed every one to identity:
        a row identity acknowledged is deleted a moment later, so counting rows alone reads 0
        for an event recorded and forwarded while the test was slow to look."""
        await eventually(lambda: self.engagement_rows() == 0)
        return len(self.identity.events)

    def facts(self) -> list[fact_pb2.Fact]:
        with self.app.db.transaction() as session:
            rows = session.execute(select(outbox.c.payload).where(
                outbox.c.topic == "analytics.facts")).scalars().all()
        return [fact_pb2.Fact.FromString(r) for r in rows]


@asynccontextmanager
async def harness(backend: Backend, **env: str) -> AsyncIterator[Harness]:
    smtp_port, tracking_port = free_port(), free_port()
    identity = IdentityWithEvents()
    clock = ManualClock()
    async with identity_stand_in(identity) as target:
        with smtp_server(SmtpSink(), smtp_port) as sink:
            app = delivery_app(backend, smtp_port, clock, identity=target,
                               CJO_DELIVERY_TRACKING_PORT=str(tracking_port), **env)
            async with serving(app) as address, grpc.aio.insecure_channel(address) as ch, \
                    httpx.AsyncClient() as web:
                yield Harness(app, pb_grpc.DeliveryServiceStub(ch), web, sink, identity, clock,
                              tracking_port, smtp_port, target)


def engagement_listener(app: ServiceApp) -> EngagementListener:
    """The engagement listener among ``app``'s background workers."""
    return next(job.__self__ for job in app.background
                if isinstance(getattr(job, "__self__", None), EngagementListener))


def smtp_provider(port: int, **config: str) -> provider_pb2.Provider:
    secrets = {k.removeprefix("secret_"): v for k, v in config.items()
               if k.startswith("secret_")}
    return provider_pb2.Provider(
        channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_SMTP,
        config={"host": "127.0.0.1", "port": str(port), "from": "Acme <news@acme.example>",
                **{k: v for k, v in config.items() if not k.startswith("secret_")}},
        secrets=secrets)


def fixture(name: str, **values: Any) -> Any:
    """A provider's documented sample (tests/delivery/provider_samples/), with the ids and
    addresses of the test's own message put in (``{{name}}`` placeholders)."""
    text = (Path(__file__).parent / "provider_samples" / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    return json.loads(text) if name.endswith(".json") else text


@dataclass
class CertServer:
    """An HTTPS server standing in for SNS: serves the signing certificate and takes
    SubscribeURL confirmations, recording every path asked for."""

    pem: bytes
    port: int = 0
    paths: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@contextmanager
def cert_server(pem: bytes, tls_cert: Path, tls_key: Path) -> Iterator[CertServer]:
    server_state = CertServer(pem)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.paths.append(self.path)
            body = server_state.pem if self.path.endswith(".pem") else b"<ConfirmSubscription/>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_cert, tls_key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    server_state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
