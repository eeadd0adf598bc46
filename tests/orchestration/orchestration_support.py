"""Orchestration with its real peers in this process: analytics, content and delivery (with an
SMTP server), each on the test's backend, and an identity stand-in answering the step round's
profile reads from what the test forwarded (:class:`InboxIdentity`; suites about identity run
the real one).

Content and delivery were written alongside orchestration. Should either not import or not start,
a small but real grpc.aio servicer stands in for it (a warning says so): the fake content renders
`{{ profile.x }}` / `{{ event.x }}` deterministically, the fake delivery records sends and
deduplicates them by idempotency key. Both answer with per-item statuses like the real ones.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from aiosmtpd.controller import Controller
from google.rpc import code_pb2, status_pb2
from sqlalchemy import func, select

import cjo_orchestration.adapters
from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2 as content_pb
from cjo.content.v1 import content_service_pb2_grpc as content_grpc
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as decisioning_grpc
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as delivery_grpc
from cjo.delivery.v1 import message_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo.identity.v1 import identity_service_pb2_grpc as identity_grpc
from cjo.identity.v1 import profile_pb2
from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as pb_grpc
from cjo_analytics.bootstrap import build as build_analytics
from cjo_orchestration.adapters.peers import (
    ChosenAction,
    DecideItem,
    DecisionAnswer,
    LiveProfile,
    ProfileGone,
    RenderItem,
    RenderOutcome,
    SendItem,
)
from cjo_orchestration.adapters.tables import enrollments as enrollment_table
from cjo_orchestration.adapters.tables import inbox as inbox_table
from cjo_orchestration.adapters.tables import metadata as orchestration_metadata
from cjo_orchestration.adapters.tables import retired_profiles as retired_table
from cjo_orchestration.bootstrap import build as build_orchestration
from cjo_orchestration.domain.journeys import Channel
from cjo_orchestration.domain.orders import (
    Deferred,
    ProfileOrder,
    Rejected,
    SendResult,
    SendTimeFound,
    Sent,
    Unavailable,
)
from cjo_platform.clock import Clock, SystemClock
from cjo_platform.config import Env
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.migrations import upgrade
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.profiles import RESERVED_KEYS, profile_view
from cjo_platform.protobuf import dict_to_struct, struct_to_dict
from support import Backend, as_service, eventually, free_port, serving, settings_for

# Fast polling and short retries, so a test sees background work within milliseconds.
ENGINE_ENV = {
    "CJO_ORCHESTRATION_POLL_SECONDS": "0.05",
    "CJO_ORCHESTRATION_RETRY_BASE_SECONDS": "0.05",
    "CJO_ORCHESTRATION_RETRY_MAX_SECONDS": "0.3",
    "CJO_ORCHESTRATION_RETRY_MAX_ATTEMPTS": "200",
}


# --- stand-ins ---------------------------------------------------------------------------------


def _workspace(context: grpc.aio.ServicerContext) -> str:
    return dict(context.invocation_metadata() or ()).get("x-cjo-workspace", "")


class FakeContent(content_grpc.ContentServiceServicer):
    """Stores email templates and renders `{{ profile.x }}` and `{{ event.x }}` in them."""

    PLACEHOLDER = re.compile(r"\{\{\s*(profile|event)\.(\w+)\s*\}\}")

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], content_item_pb2.ContentItem] = {}

    async def CreateContentItem(self, request: Any, context: Any) -> Any:
        item = content_item_pb2.ContentItem()
        item.CopyFrom(request.content_item)
        item.name, item.revision = f"contentItems/{item.key}", 1
        self.items[(_workspace(context), item.key)] = item
        return content_pb.CreateContentItemResponse(content_item=item)

    async def PublishContentItem(self, request: Any, context: Any) -> Any:
        return content_pb.PublishContentItemResponse()

    async def BatchRenderContent(self, request: Any, context: Any) -> Any:
        results = []
        for render in request.requests:
            key = render.name.removeprefix("contentItems/")
            item = self.items.get((_workspace(context), key))
            if item is None:
                results.append(content_pb.BatchRenderContentResult(status=status_pb2.Status(
                    code=code_pb2.NOT_FOUND, message=f"content item {key!r} not found")))
                continue
            values = {"profile": struct_to_dict(render.context.traits),
                      "event": struct_to_dict(render.context.event)}

            def fill(template: str, values: dict[str, dict[str, Any]] = values) -> str:
                return self.PLACEHOLDER.sub(
                    lambda m: str(values[m.group(1)].get(m.group(2), "")), template)

            results.append(content_pb.BatchRenderContentResult(
                status=status_pb2.Status(code=code_pb2.OK),
                message=common_pb2.RenderedMessage(
                    channel=render.channel, content_key=key, content_revision=1,
                    email=common_pb2.RenderedEmail(subject=fill(item.email.subject),
                                                   html=fill(item.email.html)))))
        return content_pb.BatchRenderContentResponse(results=results)


class FakeDelivery(delivery_grpc.DeliveryServiceServicer):
    """Accepts sends once per idempotency key; lists them like delivery does."""

    def __init__(self) -> None:
        self.messages: dict[tuple[str, str], message_pb2.Message] = {}

    async def BatchSendMessages(self, request: Any, context: Any) -> Any:
        results = []
        for send in request.requests:
            if not send.recipient.address:
                results.append(delivery_pb.BatchSendMessagesResult(status=status_pb2.Status(
                    code=code_pb2.INVALID_ARGUMENT, message="recipient.address is required")))
                continue
            key = (_workspace(context), send.idempotency_key)
            duplicate = key in self.messages
            if not duplicate:
                self.messages[key] = message_pb2.Message(
                    name=f"messages/m{len(self.messages) + 1}",
                    message_id=f"m{len(self.messages) + 1}",
                    idempotency_key=send.idempotency_key, recipient=send.recipient,
                    content=send.content, journey_id=send.journey_id,
                    enrollment_id=send.enrollment_id, status=message_pb2.MESSAGE_STATUS_SENT)
            results.append(delivery_pb.BatchSendMessagesResult(
                status=status_pb2.Status(code=code_pb2.OK), message=self.messages[key],
                duplicate=duplicate))
        return delivery_pb.BatchSendMessagesResponse(results=results)

    async def ListMessages(self, request: Any, context: Any) -> Any:
        workspace = _workspace(context)
        return delivery_pb.ListMessagesResponse(messages=[
            m for (ws, _), m in reversed(self.messages.items())
            if ws == workspace and (not request.journey_id or m.journey_id == request.journey_id)])


@asynccontextmanager
async def fake_server(servicer: Any, add: Callable[[Any, grpc.aio.Server], None],
                      port: int) -> AsyncIterator[str]:
    server = grpc.aio.server()
    add(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


class InboxIdentity(identity_grpc.IdentityServiceServicer):
    """Identity for suites that forward events to orchestration by hand (no identity runs): a
    profile is what its latest forwarded event said of it (the traits, computed traits and
    segments identity would hold after that event), read from orchestration's own inbox; a
    merged-away profile answers its survivor, an erased one NOT_FOUND. An id that was never
    forwarded answers the traits it was enrolled with; before it is enrolled it exists only
    when the test says identity knows it (``cluster.known_profiles``, as if identified through
    another path). Any other id is NOT_FOUND, as with identity (so Enroll refuses it)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def BatchGetProfiles(self, request: Any, context: Any) -> Any:
        if self.cluster.identity_down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "identity is down (test)")
        workspace = _workspace(context)
        with self.cluster.database.transaction() as session:
            results = [self._read(session, workspace, name.removeprefix("profiles/"))
                       for name in request.names]
        return identity_pb.BatchGetProfilesResponse(results=results)

    def _read(self, session: Any, workspace: str, profile_id: str) -> Any:
        for _ in range(32):
            successor = session.execute(
                select(retired_table.c.successor_profile_id)
                .where(retired_table.c.workspace_id == workspace,
                       retired_table.c.profile_id == profile_id)).scalar()
            if successor is None:
                break
            if not successor:
                return _not_found(profile_id)
            profile_id = successor
        forwarded = session.execute(
            select(inbox_table.c.traits)
            .where(inbox_table.c.workspace_id == workspace,
                   inbox_table.c.profile_id == profile_id)
            .order_by(inbox_table.c.seq.desc())).scalars()
        view = next((traits for traits in forwarded if traits), None)
        if view is None:
            # Enrolled (so it passed Enroll's check, or came from an audience or a seed).
            view = session.execute(
                select(enrollment_table.c.traits)
                .where(enrollment_table.c.workspace_id == workspace,
                       enrollment_table.c.profile_id == profile_id)
                .order_by(enrollment_table.c.create_time.desc())).scalars().first()
        if view is None and profile_id in self.cluster.known_profiles:
            view = {}
        if view is None:
            return _not_found(profile_id)
        return identity_pb.BatchGetProfileResult(
            status=status_pb2.Status(code=code_pb2.OK),
            profile=profile_pb2.Profile(
                name=f"profiles/{profile_id}", profile_id=profile_id,
                traits=dict_to_struct({k: v for k, v in view.items()
                                       if k not in RESERVED_KEYS}),
                computed_traits=dict_to_struct(dict(view.get("computed") or {})),
                segments=[f"segments/{s}" for s in view.get("segments") or ()]))


class SeededIdentity(identity_grpc.IdentityServiceServicer):
    """Identity answering BatchGetProfiles from a function of the profile id (its traits, or
    None for NOT_FOUND): for backlogs written straight into orchestration's database."""

    def __init__(self, traits_of: Callable[[str], dict[str, Any] | None]) -> None:
        self.traits_of = traits_of
        self.calls = 0

    async def BatchGetProfiles(self, request: Any, context: Any) -> Any:
        self.calls += 1
        results = []
        for name in request.names:
            profile_id = name.removeprefix("profiles/")
            traits = self.traits_of(profile_id)
            results.append(_not_found(profile_id) if traits is None else
                           identity_pb.BatchGetProfileResult(
                               status=status_pb2.Status(code=code_pb2.OK),
                               profile=profile_pb2.Profile(name=name, profile_id=profile_id,
                                                           traits=dict_to_struct(traits))))
        return identity_pb.BatchGetProfilesResponse(results=results)


def seeded_email(profile_id: str) -> dict[str, Any]:
    """``p<id>`` has the address ``<id>@example.com`` (what the backlog seeds enrolled with)."""
    return {"email": f"{profile_id.removeprefix('p')}@example.com"}


def _not_found(profile_id: str) -> Any:
    return identity_pb.BatchGetProfileResult(status=status_pb2.Status(
        code=code_pb2.NOT_FOUND, message=f"profile {profile_id!r} not found"))


JUST_NOW = datetime.max.replace(tzinfo=UTC)  # a merge time later than any clock's now


class ProfileBook:
    """Identity as the step round sees it (StepPeers.profiles), answering from a dict: what a
    test sets is the golden record now. ``down`` makes every call fail as if identity were
    unreachable; ``failures`` makes that many calls fail first. Like identity, an id it has no
    record of is NOT_FOUND whether it never existed or was erased (:meth:`erase`); Enroll
    refuses such an id, so in the step round NOT_FOUND means erased."""

    def __init__(self, people: dict[str, dict[str, Any]] | None = None) -> None:
        self.people: dict[str, dict[str, Any]] = dict(people or {})
        self.merged: dict[str, str] = {}  # merged-away id -> survivor
        # When identity merged each (merged_from's merge_time); unset: just now.
        self.merged_at: dict[str, datetime] = {}
        # Merged-away ids identity answers with their survivor but does not list in its
        # merged_from (merged through a chain: A into B, then B into C lists only B).
        self.unlisted: set[str] = set()
        self.down = False
        self.failures = 0
        self.calls: list[list[str]] = []

    def set(self, profile_id: str, traits: dict[str, Any], computed: dict[str, Any] | None = None,
            segments: tuple[str, ...] = ()) -> None:
        self.people[profile_id] = profile_view(traits, computed, segments)

    def erase(self, profile_id: str) -> None:
        """Identity erased the profile: its record (and what was merged into it) is gone."""
        self.people.pop(profile_id, None)
        self.merged = {k: v for k, v in self.merged.items() if v != profile_id}

    async def profiles(self, workspace_id: str,
                       profile_ids: Sequence[str]) -> list[Any]:
        self.calls.append(list(profile_ids))
        if self.down or self.failures > 0:
            self.failures = max(self.failures - 1, 0)
            raise ConnectionError("identity: UNAVAILABLE: connection refused")
        answers: list[Any] = []
        for asked in profile_ids:
            survivor = self.merged.get(asked, asked)
            view = self.people.get(survivor)
            merged_from = tuple((merged, self.merged_at.get(merged, JUST_NOW))
                                for merged, into in self.merged.items()
                                if into == survivor and merged not in self.unlisted)
            answers.append(LiveProfile(survivor, view, merged_from) if view is not None
                           else ProfileGone(f"identity: NOT_FOUND: {asked}"))
        return answers


def profile_book_for(*profile_ids: str) -> ProfileBook:
    """A book where each profile has an email address named after it."""
    book = ProfileBook()
    for profile_id in profile_ids:
        book.set(profile_id, {"email": f"{profile_id}@example.com"})
    return book



class RecordingPeers(ProfileBook):
    """Identity, content and delivery as the step round sees them: the named profiles have an
    address each (:func:`profile_book_for`), every item renders, every send is accepted (message
    id ``m-<send key>``; deferred instead when ``accept`` is false) and kept in ``sent``, and
    profile updates are refused unless a test overrides :meth:`update_profiles`."""

    def __init__(self, *profile_ids: str, accept: bool = True) -> None:
        super().__init__(profile_book_for(*profile_ids).people)
        self.accept = accept
        self.sent: list[SendItem] = []

    async def render(self, workspace_id: str,
                     items: Sequence[RenderItem]) -> list[RenderOutcome]:
        return [common_pb2.RenderedMessage(content_key=item.content_key) for item in items]

    async def send(self, workspace_id: str, items: Sequence[SendItem]) -> list[SendResult]:
        self.sent.extend(items)
        return [Sent(f"m-{item.idempotency_key}") if self.accept
                else Deferred("delivery: UNAVAILABLE") for item in items]

    async def update_profiles(self, workspace_id: str,
                              orders: Sequence[ProfileOrder]) -> list[SendResult]:
        return [Rejected("not in this test") for _ in orders]

    # --- decisioning (decide nodes, optimising splits, best-time waits) ----------------------

    decisioning: FakeDecisioning | None = None

    async def decide(self, workspace_id: str, decision_point: str, channel: Channel | None,
                     time: datetime, items: Sequence[DecideItem]
                     ) -> list[DecisionAnswer | Rejected | Unavailable]:
        assert self.decisioning is not None, "this test's peers have no decisioning"
        return self.decisioning.decide(decision_point, channel, items)

    async def send_times(self, workspace_id: str, channel: Channel | None, earliest: datetime,
                         max_delay: timedelta, profile_ids: Sequence[str]
                         ) -> list[SendTimeFound | Rejected | Unavailable]:
        assert self.decisioning is not None, "this test's peers have no decisioning"
        return self.decisioning.send_times(channel, earliest, max_delay, profile_ids)


@dataclass
class DecideCall:
    decision_point: str
    channel: Channel | None
    items: list[DecideItem]


class FakeDecisioning:
    """Decisioning as the step round sees it, recording every call. ``points`` maps a decision
    point to the action each person gets (a function of the item; None: no action eligible); a
    point it does not know is NOT_FOUND, like decisioning's. A repeated request id gets the
    first decision (decision id ``d-<request id>``), as decisioning's idempotency promises.
    ``down`` makes every call fail as if decisioning were unreachable. ``send_time`` answers
    GetSendTimes (earliest, max_delay -> time); decisioning caps it at earliest + max_delay."""

    def __init__(self) -> None:
        self.points: dict[str, Callable[[DecideItem], ChosenAction | None]] = {}
        self.down = False
        self.decide_calls: list[DecideCall] = []
        self.decisions: dict[str, DecisionAnswer] = {}
        self.send_time: Callable[[datetime, timedelta], datetime] = lambda earliest, _: earliest
        self.send_time_calls: list[tuple[Channel | None, datetime, timedelta, list[str]]] = []

    def decide(self, decision_point: str, channel: Channel | None,
               items: Sequence[DecideItem]) -> list[DecisionAnswer | Rejected | Unavailable]:
        self.decide_calls.append(DecideCall(decision_point, channel, list(items)))
        if self.down:
            return [Unavailable("decisioning: UNAVAILABLE: connection refused")] * len(items)
        choose = self.points.get(decision_point)
        if choose is None:
            return [Rejected(f"decisioning: NOT_FOUND: decision point {decision_point!r}",
                             journey_error=True)] * len(items)
        answers: list[DecisionAnswer | Rejected | Unavailable] = []
        for item in items:
            if item.request_id not in self.decisions:
                self.decisions[item.request_id] = DecisionAnswer(f"d-{item.request_id}",
                                                                 choose(item))
            answers.append(self.decisions[item.request_id])
        return answers

    def send_times(self, channel: Channel | None, earliest: datetime, max_delay: timedelta,
                   profile_ids: Sequence[str]) -> list[SendTimeFound | Rejected | Unavailable]:
        self.send_time_calls.append((channel, earliest, max_delay, list(profile_ids)))
        if self.down:
            return [Unavailable("decisioning: UNAVAILABLE: connection refused")] * len(
                profile_ids)
        when = min(self.send_time(earliest, max_delay), earliest + max_delay)
        return [SendTimeFound(when, "profile") for _ in profile_ids]

# --- the cluster -----------------------------------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


class Gate:
    """A TCP relay in front of a server that a test closes (connections are refused, as when the
    server is down) and opens again.

    Stopping and restarting the real server instead would close the process-wide client channels
    every in-process service shares, which no deployment ever does.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()
                self._writers.discard(sink)

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@dataclass
class Cluster:
    backend: Backend
    stack: AsyncExitStack
    targets: dict[str, str] = field(default_factory=dict)
    mailbox: Mailbox = field(default_factory=Mailbox)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    real: set[str] = field(default_factory=set)
    content_gate: Gate | None = None  # between orchestration and content, when asked for
    # Profiles the identity stand-in knows without a forwarded event (InboxIdentity).
    known_profiles: set[str] = field(default_factory=set)
    identity_down: bool = False  # the identity stand-in answers UNAVAILABLE while set
    _database: Database | None = None

    @property
    def database(self) -> Database:
        """Orchestration's own database, for waiting on states no RPC shows."""
        if self._database is None:
            self._database = migrated_database(self.backend)
            self.stack.callback(self._database.dispose)
        return self._database

    def stub(self, service: str) -> Any:
        channel = self.channels.get(service)
        if channel is None:
            channel = self.channels[service] = grpc.aio.insecure_channel(self.targets[service])
        return {"orchestration": pb_grpc.OrchestrationServiceStub,
                "content": content_grpc.ContentServiceStub,
                "delivery": delivery_grpc.DeliveryServiceStub,
                "analytics": analytics_grpc.AnalyticsServiceStub}[service](channel)

    @property
    def orchestration(self) -> Any:
        return self.stub("orchestration")


@asynccontextmanager
async def _start_content(cluster: Cluster) -> AsyncIterator[str]:
    try:
        from cjo_content.bootstrap import build as build_content

        app = build_content(settings_for("content", cluster.backend,
                                         CJO_ANALYTICS_TARGET=cluster.targets["analytics"]),
                            Env({}))
        server = serving(app)
        address = await server.__aenter__()
    except Exception as exc:  # not written yet, or broken: the stand-in keeps the test meaningful
        warnings.warn(f"real content service unavailable ({exc!r}); using FakeContent",
                      stacklevel=1)
        async with fake_server(FakeContent(), content_grpc.add_ContentServiceServicer_to_server,
                               free_port()) as address:
            yield address
        return
    cluster.real.add("content")
    try:
        yield address
    finally:
        await server.__aexit__(None, None, None)


@asynccontextmanager
async def _start_delivery(cluster: Cluster) -> AsyncIterator[str]:
    smtp_port = free_port()
    smtp = Controller(cluster.mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    cluster.stack.callback(smtp.stop)
    try:
        from cjo_delivery.bootstrap import build as build_delivery

        app = build_delivery(
            settings_for("delivery", cluster.backend,
                         CJO_ANALYTICS_TARGET=cluster.targets["analytics"]),
            # No identity runs here to answer delivery's consent checks; consent is identity's
            # and delivery's to test.
            Env({"CJO_SMTP_HOST": "127.0.0.1", "CJO_SMTP_PORT": str(smtp_port),
                 "CJO_DELIVERY_POLL_SECONDS": "0.05", "CJO_DELIVERY_CHECK_CONSENT": "false"}))
        server = serving(app)
        address = await server.__aenter__()
    except Exception as exc:
        warnings.warn(f"real delivery service unavailable ({exc!r}); using FakeDelivery",
                      stacklevel=1)
        async with fake_server(FakeDelivery(), delivery_grpc.add_DeliveryServiceServicer_to_server,
                               free_port()) as address:
            yield address
        return
    cluster.real.add("delivery")
    try:
        yield address
    finally:
        await server.__aexit__(None, None, None)


async def start_peers(cluster: Cluster) -> None:
    """Analytics, content and delivery (real, or the stand-ins), on the cluster's exit stack;
    their addresses go into ``cluster.targets``. For suites that start orchestration themselves
    (with other services or settings than ``running`` gives)."""
    stack = cluster.stack
    cluster.targets["analytics"] = await stack.enter_async_context(
        serving(build_analytics(settings_for("analytics", cluster.backend), Env({}))))
    cluster.targets["content"] = await stack.enter_async_context(_start_content(cluster))
    cluster.targets["delivery"] = await stack.enter_async_context(_start_delivery(cluster))


@asynccontextmanager
async def running(backend: Backend, *, content_gate: bool = False,
                  clock: Clock | None = None, decisioning: Any = None) -> AsyncIterator[Cluster]:
    """Analytics, content, delivery, an identity stand-in (:class:`InboxIdentity`), then
    orchestration pointed at all four (on ``clock``, when
    given, so a test moves orchestration's time by hand). With
    ``content_gate``, orchestration reaches content through ``cluster.content_gate``, which
    starts closed: content is down for orchestration until the test opens it. ``decisioning``
    is a DecisioningService servicer to serve as decisioning; without one, decisioning is a
    port nothing listens on."""
    async with AsyncExitStack() as stack:
        cluster = Cluster(backend, stack)
        await start_peers(cluster)
        cluster.targets["identity"] = await stack.enter_async_context(fake_server(
            InboxIdentity(cluster), identity_grpc.add_IdentityServiceServicer_to_server,
            free_port()))
        if decisioning is not None:
            cluster.targets["decisioning"] = await stack.enter_async_context(fake_server(
                decisioning, decisioning_grpc.add_DecisioningServiceServicer_to_server,
                free_port()))
        peers = {"decisioning": f"127.0.0.1:{free_port()}", **cluster.targets}
        if content_gate:
            cluster.content_gate = Gate(cluster.targets["content"])
            stack.push_async_callback(cluster.content_gate.close)
            peers["content"] = cluster.content_gate.address
        app = build_orchestration(
            settings_for("orchestration", backend,
                         **{f"CJO_{name.upper()}_TARGET": target
                            for name, target in peers.items()}),
            Env(ENGINE_ENV), clock)
        cluster.targets["orchestration"] = await stack.enter_async_context(serving(app))
        try:
            yield cluster
        finally:
            for channel in cluster.channels.values():
                await channel.close()


# --- requests --------------------------------------------------------------------------------


async def create_content(cluster: Cluster, workspace: str, key: str, subject: str,
                         html: str) -> None:
    await cluster.stub("content").CreateContentItem(content_pb.CreateContentItemRequest(
        content_item=content_item_pb2.ContentItem(
            key=key, display_name=key,
            email=content_item_pb2.EmailTemplate(subject=subject, html=html))),
        metadata=as_service(workspace))
    await cluster.stub("content").PublishContentItem(content_pb.PublishContentItemRequest(
        name=f"contentItems/{key}"), metadata=as_service(workspace))


def send_then_exit(content_key: str, event_name: str = "cart_updated",
                   display_name: str = "Cart reminder") -> journey_pb2.Journey:
    """on `event_name` -> send `content_key` by email -> exit."""
    return journey_pb2.Journey(
        display_name=display_name,
        event_trigger=journey_pb2.EventTrigger(event_name=event_name),
        entry_node_id="remind",
        nodes=[
            journey_pb2.Node(id="remind", send=journey_pb2.SendNode(
                content_key=content_key, channel=common_pb2.CHANNEL_EMAIL, next_node_id="done")),
            journey_pb2.Node(id="done", exit=journey_pb2.ExitNode()),
        ])


async def published(cluster: Cluster, workspace: str,
                    journey: journey_pb2.Journey) -> journey_pb2.Journey:
    stub = cluster.orchestration
    created = (await stub.CreateJourney(pb.CreateJourneyRequest(journey=journey),
                                        metadata=as_service(workspace))).journey
    return (await stub.PublishJourney(pb.PublishJourneyRequest(name=created.name),
                                      metadata=as_service(workspace))).journey


def forwarded(event_id: str, profile_id: str, name: str = "cart_updated",
              traits: dict[str, Any] | None = None,
              properties: dict[str, Any] | None = None) -> pb.ForwardedEvent:
    from cjo.identity.v1 import event_pb2

    return pb.ForwardedEvent(
        event_id=event_id, profile_id=profile_id,
        event=event_pb2.Event(message_id=f"src-{event_id}", type=event_pb2.EVENT_TYPE_TRACK,
                              name=name, properties=dict_to_struct(properties or {})),
        profile_traits=dict_to_struct(traits if traits is not None else {
            "email": f"{profile_id}@example.com", "name": profile_id.title()}))


async def enrollments(cluster: Cluster, workspace: str, journey: journey_pb2.Journey,
                      profile_id: str = "") -> list[Any]:
    reply = await cluster.orchestration.ListEnrollments(
        pb.ListEnrollmentsRequest(parent=journey.name, profile_id=profile_id),
        metadata=as_service(workspace))
    return list(reply.enrollments)


async def parked(cluster: Cluster, workspace: str, journey: journey_pb2.Journey, clock: Clock,
                 profile_id: str = "", count: int = 1) -> list[Any]:
    """The journey's enrollments (``profile_id``'s only, if given) once there are ``count`` and
    each waits at a wait node: its timer set and still ahead of ``clock``. Moving the clock or
    sending the awaited event any sooner races the step that enters the wait: it could read the
    moved clock and wait on, or begin waiting after the event has gone by."""
    async def check() -> list[Any] | None:
        found = await enrollments(cluster, workspace, journey, profile_id)
        waiting = [e for e in found if e.HasField("due_time")
                   and e.due_time.ToDatetime(UTC) > clock.now()]
        return found if len(found) == len(waiting) == count else None

    result = await eventually(check)
    assert isinstance(result, list)
    return result


async def messages(cluster: Cluster, workspace: str, journey_id: str) -> list[Any]:
    reply = await cluster.stub("delivery").ListMessages(
        delivery_pb.ListMessagesRequest(journey_id=journey_id), metadata=as_service(workspace))
    return list(reply.messages)


async def journey_counts(cluster: Cluster, workspace: str, journey_name: str) -> dict[int, int]:
    reply = await cluster.stub("analytics").GetJourneyReport(
        analytics_pb.GetJourneyReportRequest(journey=journey_name),
        metadata=as_service(workspace))
    return {c.type: c.count for c in reply.report.counts}


async def events_applied(cluster: Cluster) -> None:
    """Wait until orchestration's event worker has applied every event it received: whatever
    those events enroll or change has then happened."""
    def pending() -> int:
        with cluster.database.transaction() as session:
            return int(session.execute(select(func.count()).select_from(inbox_table).where(
                inbox_table.c.processed.is_(False))).scalar_one())

    async def applied() -> bool:
        return await cluster.database.run(pending) == 0

    await eventually(applied)


async def failed_attempts(cluster: Cluster, enrollment_id: str, at_least: int) -> None:
    """Wait until the step worker tried the enrollment's current node ``at_least`` times and
    failed each time (its retries back off)."""
    def attempts() -> int:
        with cluster.database.transaction() as session:
            return int(session.execute(select(enrollment_table.c.attempts).where(
                enrollment_table.c.enrollment_id == enrollment_id)).scalar_one())

    async def tried() -> bool:
        return await cluster.database.run(attempts) >= at_least

    await eventually(tried)


def migrated_database(backend: Backend) -> Database:
    """Orchestration's database on ``backend``, migrated to the newest revision."""
    url = backend.env().get("CJO_DATABASE_URL",
                            f"sqlite:///{backend.data_dir}/orchestration.db")
    database = Database(url, schema=backend.schema_prefix + "orchestration")
    upgrade(database, Path(str(cjo_orchestration.adapters.__file__)).parent / "migrations")
    return database


def transactions_on(db: Database, clock: Clock) -> Transactions:
    """The use-cases' transactions on orchestration's database, with its outbox and request log
    (what bootstrap wires), for tests that drive use-cases without a server."""
    tables = orchestration_metadata.tables
    return Transactions(db, clock, Outbox(tables["outbox"], clock),
                        RequestLog(tables["request_log"], clock))


@contextmanager
def clocked_transactions(backend: Backend, clock: Clock) -> Iterator[Transactions]:
    """:func:`transactions_on` a migrated database on ``backend`` with ``clock``."""
    db = migrated_database(backend)
    try:
        yield transactions_on(db, clock)
    finally:
        db.dispose()


def wall_clock_transactions(backend: Backend) -> AbstractContextManager[Transactions]:
    """:func:`clocked_transactions` with the system clock, for tests of the real workers'
    timing (wake-ups, sleeps until a due time)."""
    return clocked_transactions(backend, SystemClock())


class Ids:
    """Sequential ids (``e000001``, ...) for events and enrollments made by a test."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"e{self.count:06d}"
