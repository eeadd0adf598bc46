"""A real SMTP server for the delivery tests (aiosmtpd in its own thread) and request builders."""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiosmtpd.controller import Controller

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo.identity.v1 import consent_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo_delivery.bootstrap import build
from cjo_platform.clock import Clock
from cjo_platform.config import Env
from cjo_platform.rpc.server import ServiceApp
from suite import Inbox, Suite, TraceReceiver
from support import (
    SERVICE_TOKEN,
    Backend,
    as_service,
    eventually,
    free_port,
    operator_environ,
    settings_for,
)


@dataclass
class SmtpSink:
    """Records every message it accepts. ``data_replies`` are answered to DATA in turn (then
    250); RCPT to an address in ``refuse`` gets that reply."""

    data_replies: list[str] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    received: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    data_attempts: int = 0
    delay: float = 0.0  # seconds each DATA takes, to catch a send in flight
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.data_attempts += 1
            if self.data_replies:
                return self.data_replies.pop(0)
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self.received.append(parsed)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.received if m["To"] == address]


@contextmanager
def smtp_server(sink: SmtpSink, port: int) -> Iterator[SmtpSink]:
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def delivery_app(backend: Backend, smtp_port: int, clock: Clock | None = None, *,
                 analytics: str = "", identity: str = "", **env: str) -> ServiceApp:
    """The delivery service on ``backend``, sending to 127.0.0.1:``smtp_port``. Facts go to
    ``analytics``, or else to a port where nothing listens (they stay in the outbox). Consent
    is asked of ``identity``; without one it is not checked."""
    settings = settings_for("delivery", backend,
                            CJO_ANALYTICS_TARGET=analytics or f"127.0.0.1:{free_port()}",
                            CJO_IDENTITY_TARGET=identity or f"127.0.0.1:{free_port()}")
    environ = {"CJO_SMTP_PORT": str(smtp_port), "CJO_DELIVERY_POLL_SECONDS": "0.05",
               "CJO_SMTP_TIMEOUT_SECONDS": "5",
               # The tests' providers are sinks on 127.0.0.1.
               "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS": "true",
               "CJO_DELIVERY_CHECK_CONSENT": "true" if identity else "false", **env}
    config = Env(environ)
    app = build(settings, config, clock)
    config.check()
    return app


@asynccontextmanager
async def delivery_processes(backend: Backend, logs: Path, smtp_port: int, count: int = 2,
                             **env: str
                             ) -> AsyncIterator[tuple[Suite, list[str],
                                                      list[pb_grpc.DeliveryServiceStub]]]:
    """``count`` delivery processes on ``backend``'s one database (PostgreSQL), sending email
    to 127.0.0.1:``smtp_port``, consent not asked, facts left in the outbox; ``env`` on top.
    Yields the suite (to stop one), the processes' names and a stub for each."""
    names = [f"delivery-{i}" for i in range(count)]
    ports = {name: free_port() for name in names}
    environ = operator_environ()
    environ.update({**backend.env(), "CJO_SERVICE_TOKEN": SERVICE_TOKEN,
                    "CJO_LOG_FORMAT": "json", "CJO_METRICS_PORT": "0",
                    "CJO_SHUTDOWN_GRACE_SECONDS": "2", "CJO_SMTP_HOST": "127.0.0.1",
                    "CJO_SMTP_PORT": str(smtp_port),
                    "CJO_IDENTITY_TARGET": f"127.0.0.1:{free_port()}",
                    "CJO_ANALYTICS_TARGET": f"127.0.0.1:{free_port()}",
                    "CJO_DELIVERY_CHECK_CONSENT": "false",
                    "CJO_DELIVERY_FORWARD_TO_DECISIONING": "false",
                    # The tests' providers are sinks on 127.0.0.1.
                    "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS": "true",
                    "PYTHONUNBUFFERED": "1", **env})
    logs.mkdir()
    suite = Suite({"delivery": ports[names[0]]}, environ, TraceReceiver(), Inbox(), logs,
                  process_ports=ports)
    try:
        for name in names:
            suite.start(name)
        await asyncio.gather(*(suite.wait_ready(name) for name in names))
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{ports[n]}") for n in names]
        try:
            yield suite, names, [pb_grpc.DeliveryServiceStub(c) for c in channels]
        finally:
            for channel in channels:
                await channel.close()
    finally:
        for name in list(suite.processes):
            await suite.stop(name)


async def all_sent(stub: pb_grpc.DeliveryServiceStub, names: list[str],
                   metadata: tuple[tuple[str, str], ...]) -> bool:
    """Whether every message named is SENT."""
    for name in names:
        reply = await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=metadata)
        if reply.message.status != message_pb2.MESSAGE_STATUS_SENT:
            return False
    return True


def rendered_email(subject: str = "Welcome, Ada", html: str = "<p>Hello <b>Ada</b></p>",
                   text: str = "Hello Ada", preheader: str = "") -> common_pb2.RenderedMessage:
    return common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL, content_key="welcome", content_revision=3,
        email=common_pb2.RenderedEmail(subject=subject, preheader=preheader, html=html,
                                       text=text))


def send_request(key: str, address: str = "ada@example.com", *, profile_id: str = "p1",
                 journey_id: str = "", enrollment_id: str = "",
                 content: common_pb2.RenderedMessage | None = None) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        idempotency_key=key,
        recipient=message_pb2.Recipient(profile_id=profile_id, address=address),
        content=content if content is not None else rendered_email(),
        journey_id=journey_id, enrollment_id=enrollment_id)


class IdentityStandIn(identity_service_pb2_grpc.IdentityServiceServicer):
    """Answers consent questions: profiles in ``unsubscribed`` may not be reached."""

    def __init__(self, unsubscribed: set[str]) -> None:
        self.unsubscribed = unsubscribed
        self.calls: list[list[consent_pb2.ConsentQuery]] = []

    async def BatchCheckConsent(self, request: identity_service_pb2.BatchCheckConsentRequest,
                                context: grpc.aio.ServicerContext
                                ) -> identity_service_pb2.BatchCheckConsentResponse:
        self.calls.append(list(request.queries))
        results = []
        for q in request.queries:
            gone = q.profile_id in self.unsubscribed
            results.append(identity_service_pb2.BatchCheckConsentResult(
                decision=consent_pb2.ConsentDecision(
                    state=(consent_pb2.CONSENT_STATE_UNSUBSCRIBED if gone
                           else consent_pb2.CONSENT_STATE_SUBSCRIBED),
                    allowed=not gone,
                    reason="unsubscribed via unsubscribe_link" if gone else "subscribed")))
        return identity_service_pb2.BatchCheckConsentResponse(results=results)


@asynccontextmanager
async def identity_stand_in(servicer: IdentityStandIn, port: int = 0) -> AsyncIterator[str]:
    # As cjo's servers: no SO_REUSEPORT (a port shared with another listener of this process
    # would split the connections between them).
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        await server.stop(None)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key (the certificate is its own CA)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


_probes = itertools.count()
# Probes live in a workspace of their own: sender rounds claim due messages of every workspace,
# and the tested workspace's listings, counts and facts stay free of them.
PROBES = as_service("ws-probe")


async def _probe_sent(stub: Any) -> None:
    key = f"probe-{next(_probes)}"
    request = pb.SendMessageRequest(
        idempotency_key=key, transactional=True,
        recipient=message_pb2.Recipient(profile_id=key),
        content=common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_IN_APP,
                                           in_app=common_pb2.RenderedInApp(title="probe")))
    name = (await stub.SendMessage(request, metadata=PROBES)).message.name

    async def sent() -> bool:
        message = (await stub.GetMessage(pb.GetMessageRequest(name=name),
                                         metadata=PROBES)).message
        return bool(message.status == message_pb2.MESSAGE_STATUS_SENT)

    await eventually(sent)


async def a_send_round_passed(stub: Any) -> None:
    """Wait until a send round that began after this call has ended: what "nothing more
    happens" waits for, instead of sleeping.

    An in-app probe queued now is sent in a round that claimed every message due before it
    (rounds take the earliest due first; the manual clock stands still). Other messages of that
    round may still be with their providers when the probe is recorded, so a second probe is
    sent too, once the first one is recorded. With one round under way at a time
    (CJO_DELIVERY_ROUNDS=1) the second is claimed only after the first one's round has recorded
    everything it claimed; with overlapping rounds (the default) another round may claim it
    first, so a slow message of the first probe's round may still be under way. With several
    replicas, use one.
    """
    await _probe_sent(stub)
    await _probe_sent(stub)
