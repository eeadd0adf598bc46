"""Two replicas of every service on one PostgreSQL database, as real processes, running 2,000
journeys to a real SMTP server and a real SMS provider (an HTTP server speaking Twilio's API).

Each service is reached through a balancer (tests/grpc_balancer.py) that hands every call to
the next of its two replicas, as a Kubernetes Service would; the test's own calls alternate
between the replicas directly. The balancers also count every item id the services' outbox
forwarders send (events to orchestration, facts to analytics, engagement events to identity,
track events to decisioning): the receivers deduplicate, so a row sent twice is invisible in
every report, but not here.

Workspace ``acme`` has an SMTP provider, a Twilio provider and a cap of 1 SMS per profile per
day. Its ``welcome`` journey sends an email, then an SMS; its ``promo`` and ``flash`` journeys,
triggered by the same ``signed_up`` event, send one more SMS each: three SMS are attempted per
profile, one may go out (delivery's rounds are small, so both replicas' rounds interleave).
A few profiles send ``step`` events numbered 1..N, each in its own call to alternating identity
replicas; journey ``order-k`` enrolls on step k and exits on step k+1, so if orchestration
applies any step before the one numbered below it, some ``order-k`` enrollment is left active
(a sequence applied out of order always has some k+1 applied before k). Workspace ``globex``
runs a small journey (an email and an SMS, no cap) at the same time and must be unaffected.

CJO_E2E_PROFILES sets the number of journeys (2,000 unless set).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from grpc_balancer import Balancer, balancing
from grpc_health.v1 import health_pb2, health_pb2_grpc
from http_sink import HttpSink, Request, http_sink, twilio_ok

from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.decisioning.v1 import decisioning_service_pb2 as decisioning_pb
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as delivery_grpc
from cjo.delivery.v1 import message_pb2, policy_pb2, provider_pb2
from cjo.identity.v1 import (
    event_pb2,
    identity_service_pb2,
    identity_service_pb2_grpc,
    identity_settings_pb2,
)
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_platform.protobuf import dict_to_struct
from suite import SERVICES
from support import (
    PG_URL,
    SERVICE_TOKEN,
    Backend,
    bearer,
    drop_schemas,
    free_port,
    new_backend,
    operator_environ,
    postgres_available,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PROFILES = int(os.environ.get("CJO_E2E_PROFILES", "2000"))
ORDERED_PROFILES = 8  # profiles whose numbered events must be applied in order
STEPS = 6  # numbered events per ordered profile
OTHER_PROFILES = 20  # the second workspace's journey
INGEST_BATCH = 250
PROMOS = ("promo", "flash")  # acme's journeys that only send an SMS
# From the first event ingested to every assertion checked: the whole run must fit the 5
# minutes the suite gives an e2e test, start-up and set-up included.
RUN_SECONDS = float(os.environ.get("CJO_E2E_RUN_SECONDS", "200"))

HANDLE_EVENTS = "/cjo.orchestration.v1.OrchestrationService/HandleEvents"
RECORD_FACTS = "/cjo.analytics.v1.AnalyticsService/RecordFacts"
INGEST_EVENTS = "/cjo.identity.v1.IdentityService/IngestEvents"
RECORD_EVENTS = "/cjo.decisioning.v1.DecisioningService/RecordEvents"
# The receiving RPC of every outbox topic, and how to read the ids of what a request carries.
FORWARDED: dict[str, Callable[[bytes], list[str]]] = {
    HANDLE_EVENTS: lambda data: [e.event_id for e in
                                 orch_pb.HandleEventsRequest.FromString(data).events],
    RECORD_FACTS: lambda data: [f.fact_id for f in
                                analytics_pb.RecordFactsRequest.FromString(data).facts],
    RECORD_EVENTS: lambda data: [e.event_id for e in
                                 decisioning_pb.RecordEventsRequest.FromString(data).events],
    INGEST_EVENTS: lambda data: [e.message_id for e in
                                 identity_service_pb2.IngestEventsRequest.FromString(data).events],
}
OUTBOXES = ("identity", "orchestration", "delivery")  # the services that keep an outbox

SENT = message_pb2.MESSAGE_STATUS_SENT
DEFERRED = message_pb2.MESSAGE_STATUS_DEFERRED
HELD = message_pb2.MESSAGE_STATUS_HELD
PENDING = (message_pb2.MESSAGE_STATUS_QUEUED, message_pb2.MESSAGE_STATUS_SENDING)
COMPLETED = enrollment_pb2.ENROLLMENT_STATE_COMPLETED
STATE = enrollment_pb2.EnrollmentState
STATUS = message_pb2.MessageStatus
EMAIL, SMS = common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_SMS


@dataclass(frozen=True)
class Tenant:
    workspace_id: str
    sender: str  # the From address of its SMTP provider
    account_sid: str  # of its Twilio provider
    profiles: int

    def user(self, i: int) -> str:
        return f"{self.workspace_id}-u{i:05d}"

    def email(self, i: int) -> str:
        return f"{self.user(i)}@example.com"

    def phone(self, i: int) -> str:
        return f"+1{4155550000 + i + (5000 if self.workspace_id == 'globex' else 0)}"


ACME = Tenant("acme", "acme@acme.example", "ACacme", PROFILES)
GLOBEX = Tenant("globex", "globex@globex.example", "ACglobex", OTHER_PROFILES)


# --- the SMTP server ---------------------------------------------------------------------------


class Mailbox:
    """aiosmtpd handler: every envelope, by sender and recipient. The SMTP server runs in a
    thread of its own: the test reads under the lock the handler writes under."""

    def __init__(self) -> None:
        self.received: Counter[tuple[str, str]] = Counter()  # (From, To) -> emails
        self.subjects: dict[str, str] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.original_content or envelope.content,
                                  policy=policy.default)
        with self.lock:
            for to in envelope.rcpt_tos:
                self.received[(envelope.mail_from, to)] += 1
                self.subjects[to] = str(mail["subject"])
        return "250 OK"

    def _received(self) -> list[tuple[tuple[str, str], int]]:
        with self.lock:
            return list(self.received.items())

    def count(self, tenant: Tenant) -> int:
        return sum(n for (sender, _), n in self._received() if sender == tenant.sender)

    def per_recipient(self, tenant: Tenant) -> Counter[str]:
        return Counter({to: n for (sender, to), n in self._received()
                        if sender == tenant.sender})


def sms_per_recipient(sink: HttpSink, tenant: Tenant) -> Counter[str]:
    path = f"/2010-04-01/Accounts/{tenant.account_sid}/Messages.json"
    with sink.lock:
        requests: list[Request] = list(sink.requests)
    return Counter(r.form()["To"] for r in requests if r.path == path)


# --- ten processes -----------------------------------------------------------------------------


@dataclass
class Cluster:
    """Two processes per service, all on one PostgreSQL database (a schema per service)."""

    backend: Backend
    logs: Path
    env: dict[str, str]
    ports: dict[str, list[int]]
    balancers: dict[str, Balancer]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, service: str, replica: int) -> None:
        name = f"{service}-{replica}"
        env = {**self.env, f"CJO_{service.upper()}_PORT": str(self.ports[service][replica])}
        if service == "delivery":  # retries, consent waits, provider refusals: for a failure
            env["CJO_LOG_LEVEL"] = "info"
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"cjo_{service}"], env=env,
            stdout=(self.logs / f"{name}.log").open("ab"), stderr=subprocess.STDOUT)

    def target(self, service: str, replica: int) -> str:
        return f"127.0.0.1:{self.ports[service][replica]}"

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    async def wait_ready(self, service: str, replica: int, timeout: float = 90) -> None:
        async with grpc.aio.insecure_channel(self.target(service, replica)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + timeout
            while True:
                self.check_alive()
                with suppress(grpc.aio.AioRpcError):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{service}-{replica} not ready:\n"
                                         + self.log(f"{service}-{replica}"))
                await asyncio.sleep(0.2)

    def stop_all(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stacks(self, service: str) -> str:
        """Where ``service``'s replicas are right now (py-spy dump, when it is installed), for
        a failure message: a stall shows what they wait for."""
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            return ""
        dumps = []
        for name, proc in sorted(self.processes.items()):
            if name.startswith(service) and proc.poll() is None:
                done = subprocess.run([str(spy), "dump", "--pid", str(proc.pid)],
                                      capture_output=True, text=True, timeout=60, check=False)
                dumps.append(f"{name}:\n{(done.stdout or done.stderr)[:6000]}")
        return "\n".join(dumps)

    def notes(self, service: str, count: int = 20) -> str:
        """The last ``count`` lines ``service``'s replicas logged, but for messages deferred
        (each profile's capped SMS logs one)."""
        lines = [f"{name}: {line[:300]}" for name in sorted(self.processes)
                 if name.startswith(service)
                 for line in self.log(name, tail=400_000).splitlines()
                 if '"message deferred"' not in line and "metrics port" not in line]
        return "\n".join(lines[-count:])

    def errors(self) -> str:
        """The error lines of every replica's log, for a failure message."""
        lines = []
        for name in sorted(self.processes):
            for line in self.log(name, tail=200_000).splitlines():
                if '"level": "error"' in line or "Traceback" in line:
                    lines.append(f"{name}: {line[:400]}")
        return "\n".join(lines[-40:])


@asynccontextmanager
async def cluster(backend: Backend, tmp_path: Path, smtp_port: int) -> AsyncIterator[Cluster]:
    ports = {s: [free_port(), free_port()] for s in SERVICES}
    async with AsyncExitStack() as stack:
        balancers = {s: await stack.enter_async_context(balancing(
            [f"127.0.0.1:{p}" for p in ports[s]], FORWARDED)) for s in SERVICES}
        env = operator_environ()
        env.update(backend.env())
        env.update({
            "CJO_SERVICE_TOKEN": SERVICE_TOKEN,
            "CJO_LOG_FORMAT": "json",
            "CJO_LOG_LEVEL": "warning",
            "CJO_SHUTDOWN_GRACE_SECONDS": "2",
            # Every replica reaches every peer through its balancer.
            **{f"CJO_{s.upper()}_TARGET": b.address for s, b in balancers.items()},
            "CJO_SMTP_HOST": "127.0.0.1",
            "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS": "true",
            "CJO_SMTP_PORT": str(smtp_port),
            # Both delivery replicas read the providers' secrets with one key.
            "CJO_DELIVERY_SECRET_KEYS": base64.b64encode(b"k" * 32).decode(),
            "CJO_DELIVERY_POLL_SECONDS": "0.1",
            # Small send rounds: the two replicas' rounds claim neighbouring messages at once.
            "CJO_DELIVERY_BATCH_SIZE": "5",
            "CJO_DELIVERY_RETRY_BASE_SECONDS": "1",
            "CJO_DELIVERY_RETRY_MAX_SECONDS": "5",
            "CJO_ORCHESTRATION_POLL_SECONDS": "0.1",
            "CJO_ORCHESTRATION_RETRY_BASE_SECONDS": "0.2",
            "CJO_ORCHESTRATION_RETRY_MAX_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
        })
        logs = tmp_path / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        running = Cluster(backend, logs, env, ports, balancers)
        try:
            for service in SERVICES:
                for replica in (0, 1):
                    running.start(service, replica)
            await asyncio.gather(*(running.wait_ready(s, r) for s in SERVICES for r in (0, 1)))
            yield running
        finally:
            await asyncio.to_thread(running.stop_all)


@pytest.fixture
def postgres_backend(tmp_path: Path) -> Iterator[Backend]:
    if not postgres_available():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    backend = new_backend("postgresql", tmp_path)
    yield backend
    drop_schemas(backend)


def outbox_rows(backend: Backend) -> dict[str, int]:
    """Rows still waiting in each service's outbox."""
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            return {s: int(conn.execute(sa.text(
                f'SELECT count(*) FROM "{backend.schema_prefix}{s}".outbox')).scalar_one())
                for s in OUTBOXES}
    finally:
        engine.dispose()


def where_things_stand(backend: Backend, deadlocks_before: int) -> str:
    """For a failure message: delivery's messages by status, orchestration's enrollments by
    state and unprocessed inbox rows, each outbox's rows, and the deadlocks PostgreSQL broke
    in the test's database since the run began."""
    engine = sa.create_engine(PG_URL)
    delivery = f'"{backend.schema_prefix}delivery"'
    orchestration = f'"{backend.schema_prefix}orchestration"'
    try:
        with engine.connect() as conn:
            def counts(column: str, table: str) -> dict[str, int]:
                return {str(k): int(n) for k, n in conn.execute(sa.text(
                    f"SELECT {column}, count(*) FROM {table} GROUP BY {column}")).all()}
            reasons = conn.execute(sa.text(
                f"SELECT status, left(error, 120) AS error, count(*) AS n FROM {delivery}.messages "
                "WHERE error <> '' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 6")).all()
            return (f"messages: {counts('status', f'{delivery}.messages')}; "
                    f"their errors: {[tuple(r) for r in reasons]}; "
                    f"enrollments: {counts('state', f'{orchestration}.enrollments')}; "
                    f"inbox: {counts('processed', f'{orchestration}.inbox')}; "
                    f"outboxes: {outbox_rows(backend)}; "
                    f"deadlocks: {database_deadlocks(conn) - deadlocks_before}")
    finally:
        engine.dispose()


def database_deadlocks(conn: Any) -> int:
    """The deadlocks PostgreSQL broke in the current database since its statistics began."""
    return int(conn.execute(sa.text(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )).scalar_one())


def deadlocks_now() -> int:
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            return database_deadlocks(conn)
    finally:
        engine.dispose()


# --- the API, through both replicas ------------------------------------------------------------


class Replicas:
    """Stubs of one service on each replica; ``next()`` alternates between them."""

    def __init__(self, channels: list[grpc.aio.Channel], stub: Callable[[Any], Any]) -> None:
        self.stubs = [stub(ch) for ch in channels]
        self._turn = itertools.cycle(self.stubs)

    def next(self) -> Any:
        return next(self._turn)


async def set_up(tenant: Tenant, identity: Replicas, content: Replicas, delivery: Replicas,
                 orchestration: Replicas, workspaces: Any, sms_url: str, smtp_port: int,
                 cap: bool, ordered: bool) -> tuple[tuple[tuple[str, str], ...], dict[str, str]]:
    """A workspace with its providers, policy, content and published journeys; returns its API
    key's metadata and its journeys' names by key."""
    key = (await workspaces.CreateWorkspace(ws_pb.CreateWorkspaceRequest(
        workspace_id=tenant.workspace_id, display_name=tenant.workspace_id),
        metadata=bearer(SERVICE_TOKEN))).api_key.secret
    auth = bearer(key)

    # SMS is opt-in by default; these people may get texts until they say stop.
    settings = (await identity.next().GetIdentitySettings(
        identity_service_pb2.GetIdentitySettingsRequest(), metadata=auth)).settings
    del settings.consent_defaults[:]
    settings.consent_defaults.append(identity_settings_pb2.ChannelConsentDefault(
        channel=SMS, opt_in=False))
    await identity.next().UpdateIdentitySettings(identity_service_pb2.UpdateIdentitySettingsRequest(
        settings=settings, request_id=f"{tenant.workspace_id}-settings"), metadata=auth)

    stub = delivery.next()
    await stub.CreateProvider(delivery_pb.CreateProviderRequest(provider=provider_pb2.Provider(
        channel=EMAIL, kind=provider_pb2.PROVIDER_KIND_SMTP, display_name="Mail",
        config={"host": "127.0.0.1", "port": str(smtp_port), "from": tenant.sender})),
        metadata=auth)
    await delivery.next().CreateProvider(delivery_pb.CreateProviderRequest(
        provider=provider_pb2.Provider(
            channel=SMS, kind=provider_pb2.PROVIDER_KIND_TWILIO_SMS, display_name="Twilio",
            config={"account_sid": tenant.account_sid, "from": "+15005550006",
                    "base_url": sms_url},
            secrets={"auth_token": f"{tenant.workspace_id}-twilio-token"})), metadata=auth)
    if cap:
        await delivery.next().UpdateDeliveryPolicy(delivery_pb.UpdateDeliveryPolicyRequest(
            policy=policy_pb2.DeliveryPolicy(frequency_caps=[policy_pb2.FrequencyCap(
                channel=SMS, max_messages=1, window_seconds=86400)]),
            request_id=f"{tenant.workspace_id}-policy"), metadata=auth)

    items = [
        content_item_pb2.ContentItem(
            key="welcome",
            email=content_item_pb2.EmailTemplate(
                subject=f"Welcome to {tenant.workspace_id}, {{{{ profile.first_name }}}}",
                html="<p>Hi {{ profile.first_name }}.</p>", text="Hi."),
            sms=content_item_pb2.SmsTemplate(text="Hi {{ profile.first_name }}, welcome.")),
        content_item_pb2.ContentItem(
            key="promo", sms=content_item_pb2.SmsTemplate(text="10% off today.")),
    ]
    for item in items:
        await content.next().CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=item, request_id=f"create-{item.key}"), metadata=auth)
        await content.next().PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name=f"contentItems/{item.key}", request_id=f"publish-{item.key}"), metadata=auth)

    def send(node_id: str, key: str, channel: int, then: str) -> journey_pb2.Node:
        return journey_pb2.Node(id=node_id, send=journey_pb2.SendNode(
            content_key=key, channel=channel, next_node_id=then))

    done = journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())
    journeys = {"welcome": journey_pb2.Journey(
        display_name="Welcome", event_trigger=journey_pb2.EventTrigger(event_name="signed_up"),
        entry_node_id="email", nodes=[send("email", "welcome", EMAIL, "sms"),
                                      send("sms", "welcome", SMS, "done"), done])}
    if cap:
        # Two more SMS per profile, queued together in one step round: adjacent in delivery's
        # queue, so the two replicas' send rounds often claim one each at the same moment.
        for key_ in PROMOS:
            journeys[key_] = journey_pb2.Journey(
                display_name=key_.title(),
                event_trigger=journey_pb2.EventTrigger(event_name="signed_up"),
                entry_node_id="sms", nodes=[send("sms", "promo", SMS, "done"), done])
    if ordered:
        day = journey_pb2.WaitNode(next_node_id="done")
        day.duration.FromSeconds(86400)
        # order-STEPS has no next step to end it: its entries show that every step was applied.
        for k in range(1, STEPS + 1):
            journeys[f"order-{k}"] = journey_pb2.Journey(
                display_name=f"Step {k} before step {k + 1}",
                event_trigger=journey_pb2.EventTrigger(event_name="step",
                                                       filter=f"event.n == {k}"),
                exit_criteria=[journey_pb2.ExitCriterion(event_name="step",
                                                         filter=f"event.n == {k + 1}")]
                if k < STEPS else [],
                entry_node_id="wait", nodes=[journey_pb2.Node(id="wait", wait=day), done])
    names = {}
    for key_, journey in journeys.items():
        created = (await orchestration.next().CreateJourney(orch_pb.CreateJourneyRequest(
            journey=journey, request_id=f"create-{key_}"), metadata=auth)).journey
        await orchestration.next().PublishJourney(orch_pb.PublishJourneyRequest(
            name=created.name, request_id=f"publish-{key_}"), metadata=auth)
        names[key_] = created.name
    return auth, names


def signed_up(tenant: Tenant, i: int) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=f"{tenant.workspace_id}-signup-{i}", type=event_pb2.EVENT_TYPE_TRACK,
        name="signed_up", identifiers=[event_pb2.Identifier(type="user_id", value=tenant.user(i))],
        traits=dict_to_struct({"email": tenant.email(i), "phone": tenant.phone(i),
                               "first_name": f"P{i}"}), source="web")


def step(i: int, n: int) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=f"acme-step-{i}-{n}", type=event_pb2.EVENT_TYPE_TRACK, name="step",
        identifiers=[event_pb2.Identifier(type="user_id", value=f"acme-ordered-{i}")],
        properties=dict_to_struct({"n": n}), source="app")


async def ingest(identity: Replicas, auth: Any, events: list[event_pb2.Event]) -> None:
    reply = await identity.next().IngestEvents(
        identity_service_pb2.IngestEventsRequest(events=events), metadata=auth, timeout=60)
    refused = [r.status for r in reply.results if r.status.code != 0]
    assert not refused, refused[:3]


async def pages(call: Callable[[str], Awaitable[Any]], items: str) -> list[Any]:
    found: list[Any] = []
    token = ""
    while True:
        page = await call(token)
        found.extend(getattr(page, items))
        token = page.next_page_token
        if not token:
            return found


async def enrollments(orchestration: Replicas, auth: Any, journey: str) -> list[Any]:
    return await pages(lambda token: orchestration.next().ListEnrollments(
        orch_pb.ListEnrollmentsRequest(parent=journey, page_size=1000, page_token=token),
        metadata=auth), "enrollments")


async def messages(delivery: Replicas, auth: Any, status: int = 0) -> list[Any]:
    return await pages(lambda token: delivery.next().ListMessages(delivery_pb.ListMessagesRequest(
        page_size=1000, page_token=token, status=status), metadata=auth), "messages")


async def fact_counts(analytics: Replicas, auth: Any, journey: str) -> dict[int, int]:
    report = (await analytics.next().GetJourneyReport(analytics_pb.GetJourneyReportRequest(
        journey=journey), metadata=auth)).report
    return {c.type: c.count for c in report.counts}


# --- the test ----------------------------------------------------------------------------------


async def test_two_replicas_of_every_service_run_2000_journeys_exactly_once(
        postgres_backend: Backend, tmp_path: Path) -> None:
    mailbox = Mailbox()
    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        with http_sink(HttpSink(default=twilio_ok)) as sms_sink:
            async with cluster(postgres_backend, tmp_path, smtp_port) as running:
                await run(running, mailbox, sms_sink, smtp_port)
    finally:
        smtp.stop()


async def run(running: Cluster, mailbox: Mailbox, sms_sink: HttpSink, smtp_port: int) -> None:
    channels = {s: [grpc.aio.insecure_channel(running.target(s, r)) for r in (0, 1)]
                for s in SERVICES}
    try:
        await journeys_through_replicas(running, channels, mailbox, sms_sink, smtp_port)
    finally:
        for pair in channels.values():
            for channel in pair:
                await channel.close()


async def journeys_through_replicas(running: Cluster, channels: dict[str, list[grpc.aio.Channel]],
                                    mailbox: Mailbox, sms_sink: HttpSink,
                                    smtp_port: int) -> None:
    identity = Replicas(channels["identity"], identity_service_pb2_grpc.IdentityServiceStub)
    workspaces = Replicas(channels["identity"], ws_grpc.WorkspaceServiceStub)
    content = Replicas(channels["content"], content_service_pb2_grpc.ContentServiceStub)
    delivery = Replicas(channels["delivery"], delivery_grpc.DeliveryServiceStub)
    orchestration = Replicas(channels["orchestration"], orch_grpc.OrchestrationServiceStub)
    analytics = Replicas(channels["analytics"], analytics_grpc.AnalyticsServiceStub)

    acme_auth, acme = await set_up(ACME, identity, content, delivery, orchestration,
                                   workspaces.next(), sms_sink.url, smtp_port,
                                   cap=True, ordered=True)
    globex_auth, globex = await set_up(GLOBEX, identity, content, delivery, orchestration,
                                       workspaces.next(), sms_sink.url, smtp_port,
                                       cap=False, ordered=False)

    # Everything at once: acme's sign-ups in batches, globex's, and each ordered profile's
    # numbered events one call at a time, alternating replicas.
    deadlocks_before = await asyncio.to_thread(deadlocks_now)
    started = time.monotonic()
    deadline = started + RUN_SECONDS

    async def bulk(tenant: Tenant, auth: Any) -> None:
        batches = [[signed_up(tenant, i) for i in range(start, min(start + INGEST_BATCH,
                                                                   tenant.profiles))]
                   for start in range(0, tenant.profiles, INGEST_BATCH)]
        lanes = asyncio.Semaphore(2)

        async def one(batch: list[event_pb2.Event]) -> None:
            async with lanes:
                await ingest(identity, auth, batch)
        await asyncio.gather(*(one(b) for b in batches))

    async def numbered(i: int) -> None:
        for n in range(1, STEPS + 1):
            await ingest(identity, acme_auth, [step(i, n)])

    await asyncio.gather(bulk(ACME, acme_auth), bulk(GLOBEX, globex_auth),
                         *(numbered(i) for i in range(ORDERED_PROFILES)))
    ingested = time.monotonic() - started

    async def until(check: Callable[[], Awaitable[Any] | Any], what: str,
                    interval: float = 0.5) -> Any:
        while True:
            running.check_alive()
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not reached within {RUN_SECONDS:.0f} s of the first event "
                    f"(last: {result!r})\nemails: acme {mailbox.count(ACME)}, "
                    f"globex {mailbox.count(GLOBEX)}; SMS: acme "
                    f"{sum(sms_per_recipient(sms_sink, ACME).values())}, globex "
                    f"{sum(sms_per_recipient(sms_sink, GLOBEX).values())}\n"
                    f"{where_things_stand(running.backend, deadlocks_before)}\n"
                    f"{running.errors()}\n{running.notes('delivery')}\n"
                    f"{running.stacks('delivery')}")
            await asyncio.sleep(interval)

    # 1. The mail and the texts arrive.
    await until(lambda: mailbox.count(ACME) >= PROFILES and mailbox.count(GLOBEX) >= OTHER_PROFILES,
                "every email at the SMTP server")
    delivered = time.monotonic() - started
    await until(lambda: sum(sms_per_recipient(sms_sink, ACME).values()) >= PROFILES
                and sum(sms_per_recipient(sms_sink, GLOBEX).values()) >= OTHER_PROFILES,
                "every SMS at the provider")

    # 2. Quiet: every journey has ended, analytics counted every entry and every send, delivery
    # holds nothing it may still send, every outbox is empty and no forwarded call is in flight.
    async def journeys_ended() -> bool:
        for auth, names, tenant in ((acme_auth, acme, ACME), (globex_auth, globex, GLOBEX)):
            for key in ("welcome", *PROMOS):
                if key not in names:
                    continue
                counts = await fact_counts(analytics, auth, names[key])
                if (counts.get(fact_pb2.FACT_TYPE_JOURNEY_ENTERED) != tenant.profiles
                        or counts.get(fact_pb2.FACT_TYPE_JOURNEY_EXITED) != tenant.profiles):
                    return False
        return True

    await until(journeys_ended, "analytics counts every journey entered and ended")

    async def nothing_pending() -> bool:
        for auth in (acme_auth, globex_auth):
            for status in PENDING:
                page = await delivery.next().ListMessages(delivery_pb.ListMessagesRequest(
                    page_size=1, status=status), metadata=auth)
                if page.messages:
                    return False
        return True

    await until(nothing_pending, "delivery has nothing queued or sending")

    async def steps_applied() -> bool:
        """Each step enrolled its profile in its order-k journey (step k+1's exit of order-k
        is applied in the same event round as its own entry)."""
        for k in range(1, STEPS + 1):
            found = await orchestration.next().ListEnrollments(orch_pb.ListEnrollmentsRequest(
                parent=acme[f"order-{k}"], page_size=1000), metadata=acme_auth)
            if len(found.enrollments) < ORDERED_PROFILES:
                return False
        return True

    await until(steps_applied, "every numbered step applied")

    def drained() -> bool:
        return (not any(outbox_rows(running.backend).values())
                and not any(b.in_flight for b in running.balancers.values()))

    await until(drained, "every outbox drained")
    settled = time.monotonic() - started

    # 3. Count. Every failure is listed, not just the first.
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    def excess(counts: Counter[str], expected: set[str]) -> str:
        twice = {k: n for k, n in counts.items() if n > 1}
        missing = expected - set(counts)
        strangers = set(counts) - expected
        return (f"{len(twice)} received more than once (e.g. {sorted(twice.items())[:3]}), "
                f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                f"{len(strangers)} unexpected (e.g. {sorted(strangers)[:3]})")

    # Exactly one email per profile, from the workspace's own provider.
    for tenant in (ACME, GLOBEX):
        got = mailbox.per_recipient(tenant)
        expected = {tenant.email(i) for i in range(tenant.profiles)}
        expect(got == Counter(dict.fromkeys(expected, 1)),
               f"{tenant.workspace_id} emails: {sum(got.values())} for {tenant.profiles} "
               f"profiles; {excess(got, expected)}")
    expect(sum(mailbox.received.values()) == PROFILES + OTHER_PROFILES,
           f"emails in all: {sum(mailbox.received.values())}, "
           f"expected {PROFILES + OTHER_PROFILES}")
    expect(mailbox.subjects.get(GLOBEX.email(0)) == "Welcome to globex, P0",
           f"globex's email subject: {mailbox.subjects.get(GLOBEX.email(0))!r}")

    # Exactly one SMS per acme profile although three were attempted (the cap of 1 a day holds
    # across both delivery replicas); globex has no cap and gets its one.
    for tenant in (ACME, GLOBEX):
        got = sms_per_recipient(sms_sink, tenant)
        expected = {tenant.phone(i) for i in range(tenant.profiles)}
        expect(got == Counter(dict.fromkeys(expected, 1)),
               f"{tenant.workspace_id} SMS at the provider: {sum(got.values())} for "
               f"{tenant.profiles} profiles; {excess(got, expected)}")
    acme_messages = await messages(delivery, acme_auth)
    sms_statuses: dict[str, Counter[int]] = {}
    for m in acme_messages:
        if m.content.channel == SMS:
            sms_statuses.setdefault(m.recipient.profile_id, Counter())[m.status] += 1
    capped = Counter(tuple(sorted(c.elements())) for c in sms_statuses.values())
    # The third waits HELD behind the second (a profile's messages on a channel go in order).
    expect(capped == Counter({(SENT, DEFERRED, HELD): PROFILES}),
           f"acme's SMS statuses per profile: "
           f"{ {tuple(map(STATUS.Name, k)): n for k, n in capped.items()} }; expected one SENT, "
           f"one DEFERRED by the cap and one HELD behind it for each of {PROFILES}")

    # Every outbox row was forwarded once: each event reached orchestration once, each fact
    # analytics once, each engagement event identity once; again only after a call that failed
    # (on a loaded machine a call may pass its deadline: the forwarder sends its rows again).
    orchestration_in = running.balancers["orchestration"]
    analytics_in = running.balancers["analytics"]
    identity_in = running.balancers["identity"]
    decisioning_in = running.balancers["decisioning"]
    for balancer, method, what in ((orchestration_in, HANDLE_EVENTS, "events to orchestration"),
                                   (analytics_in, RECORD_FACTS, "facts to analytics"),
                                   (decisioning_in, RECORD_EVENTS, "track events to decisioning"),
                                   (identity_in, INGEST_EVENTS, "engagement events to identity")):
        received = balancer.received[method]
        repeated = balancer.repeated(method)
        expect(not repeated,
               f"{what}: {len(repeated)} of {len(received)} forwarded more than once "
               f"({sum(repeated.values()) - len(repeated)} extra sends; e.g. "
               f"{sorted(repeated.items())[:3]}); failed forwarding calls: "
               f"{balancer.failed[method]}")
    forwarded_events = len(orchestration_in.received[HANDLE_EVENTS])
    ingested_events = PROFILES + OTHER_PROFILES + ORDERED_PROFILES * STEPS
    expect(forwarded_events >= ingested_events,
           f"orchestration was sent {forwarded_events} distinct events, "
           f"{ingested_events} were ingested")
    expect(len(analytics_in.received[RECORD_FACTS]) > 0, "no facts reached analytics")

    # Each ordered profile's numbered events were applied in order: every order-k enrollment
    # was ended by step k+1.
    ordered_states: Counter[tuple[str, str, str]] = Counter()
    for k in range(1, STEPS):
        for e in await enrollments(orchestration, acme_auth, acme[f"order-{k}"]):
            ordered_states[(f"order-{k}", STATE.Name(e.state), e.exit_reason)] += 1
    out_of_order = {key: n for key, n in ordered_states.items()
                    if key[1:] != ("ENROLLMENT_STATE_EXITED", "exit_criteria")}
    expect(ordered_states.total() == ORDERED_PROFILES * (STEPS - 1) and not out_of_order,
           f"{ordered_states.total()} order-k enrollments for "
           f"{ORDERED_PROFILES * (STEPS - 1)}; not ended by the next step (still ACTIVE: a "
           f"step was applied before the one numbered below it): {out_of_order}")

    # Every journey ran to its end, once per profile.
    for auth, names, tenant in ((acme_auth, acme, ACME), (globex_auth, globex, GLOBEX)):
        for key in ("welcome", *PROMOS):
            if key in names:
                found = await enrollments(orchestration, auth, names[key])
                states = Counter(STATE.Name(e.state) for e in found)
                expect(states == Counter({STATE.Name(COMPLETED): tenant.profiles})
                       and len({e.profile_id for e in found}) == tenant.profiles,
                       f"{tenant.workspace_id} {key}: enrollment states {dict(states)} over "
                       f"{len({e.profile_id for e in found})} profiles")

    # The load went through both replicas of every service.
    for service, balancer in running.balancers.items():
        served = [balancer.served(r) for r in (0, 1)]
        expect(all(served),
               f"{service}'s replicas served {served} peer calls")

    finished = time.monotonic() - started
    events_sent = sum(orchestration_in.received[HANDLE_EVENTS].values())
    facts_sent = sum(analytics_in.received[RECORD_FACTS].values())
    figures = (f"{PROFILES} journeys: ingested in {ingested:.1f} s, every email at the SMTP "
               f"server after {delivered:.1f} s, settled after {settled:.1f} s, checked after "
               f"{finished:.1f} s; events forwarded {events_sent} times for {forwarded_events} "
               f"events; facts forwarded {facts_sent} times for "
               f"{len(analytics_in.received[RECORD_FACTS])} facts; deadlocks PostgreSQL broke "
               f"{await asyncio.to_thread(deadlocks_now) - deadlocks_before}")
    print(figures)
    assert not problems, "\n".join([*problems, figures])
