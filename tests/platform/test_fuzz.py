"""Fuzz every RPC of every service through the real gRPC servers: no request, however malformed,
is answered INTERNAL or UNKNOWN, and no answer to workspace A's key shows workspace B's data.

The six services run in-process on the test's database, with two workspaces and resources of
each. The RPCs are found in the generated modules (``fuzz_support.all_rpcs``), so a new RPC is
fuzzed without a change here, and a new service's RPCs fail the test until it runs here too;
every RPC must be answered by a service (never UNIMPLEMENTED). An INVALID_ARGUMENT answer must
name the field at fault (a ``BadRequest`` field violation).

Requests come from hypothesis strategies built from the proto descriptors (see
``fuzz_support``) and from mutations of a few known-good requests per RPC. Every failure is
collected (grouped by RPC and by the server's exception) and reported together, each with the
smallest request that caused it.

CI runs a bounded, deterministic budget (the same requests on every run). For a deep local run:
``CJO_FUZZ_EXAMPLES=300`` (requests per RPC), ``CJO_FUZZ_SEED=7`` (another set of requests),
``CJO_FUZZ_RPC=CreateJourney,IngestEvents`` (only the RPCs named) and
``CJO_FUZZ_REPORT=/tmp/fuzz.txt`` (the findings, also when there are none).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from fuzz_support import Findings, Fuzzer, Plausible, Rpc, all_rpcs, describe, mask_paths, requests
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from hypothesis import HealthCheck, Phase, given, seed, settings

from cjo.analytics.v1 import analytics_service_pb2 as an_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as an_grpc
from cjo.analytics.v1 import fact_pb2, reports_pb2
from cjo.common.v1 import common_pb2, dead_letter_service_pb2
from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2 as ct_pb
from cjo.content.v1 import content_service_pb2_grpc as ct_grpc
from cjo.decisioning.v1 import action_pb2, decision_point_pb2, evaluation_pb2
from cjo.decisioning.v1 import decision_pb2 as dc_decision_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as dc_pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dc_grpc
from cjo.delivery.v1 import delivery_service_pb2 as dl_pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as dl_grpc
from cjo.delivery.v1 import inbox_pb2, message_pb2, policy_pb2, provider_pb2
from cjo.identity.v1 import consent_pb2, event_pb2, identity_settings_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as id_pb
from cjo.identity.v1 import identity_service_pb2_grpc as id_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as or_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as or_grpc
from cjo_analytics.bootstrap import build as build_analytics
from cjo_content.bootstrap import build as build_content
from cjo_decisioning.bootstrap import build as build_decisioning
from cjo_delivery.bootstrap import build as build_delivery
from cjo_identity.bootstrap import build as build_identity
from cjo_orchestration.bootstrap import build as build_orchestration
from cjo_platform.config import Env
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc import interceptors
from cjo_platform.rpc.status import field_violations
from support import (
    SERVICE_TOKEN,
    Backend,
    as_service,
    bearer,
    eventually,
    free_port,
    segment_backfilled,
    serving,
    settings_for,
)

# 30: 121 s (SQLite) and 93 s (PostgreSQL) for the six services on the 2-core machine under a
# load average of ~18 (2026-12-04); the five-service version took 111 s (SQLite) alike.
EXAMPLES = int(os.environ.get("CJO_FUZZ_EXAMPLES", "30"))
ONLY = {name for name in os.environ.get("CJO_FUZZ_RPC", "").split(",") if name}
REPORT = os.environ.get("CJO_FUZZ_REPORT", "")  # a file to write the findings to
SEED = os.environ.get("CJO_FUZZ_SEED", "")  # another deterministic set of requests
CALL_TIMEOUT = 30.0
REPEATS = 4  # identical concurrent copies of each RPC's first known-good request
# Only workspace B's data carries this; an answer to A's key holding it is a breach.
B_MARKER = "only-in-workspace-b-7f3a"
RUNS_OF_LAST = ("Delete", "Erase", "Archive", "Purge")  # destructive RPCs go last

pytestmark = pytest.mark.timeout(max(300, EXAMPLES * 40))

BUILDERS = {"identity": build_identity, "content": build_content,
            "orchestration": build_orchestration, "delivery": build_delivery,
            "analytics": build_analytics, "decisioning": build_decisioning}
SHARED_PACKAGES = {"common"}  # cjo.common.v1 services run in every service


@asynccontextmanager
async def six_services(backend: Backend) -> AsyncIterator[tuple[dict[str, str], set[str]]]:
    """Every service as a real gRPC server in this event loop, each dialing the others (mail
    goes to a port where nothing listens: sends fail and are retried, as in an outage). Yields
    their addresses and the methods only cjo services may call (the fuzzer calls those with the
    service token, acting for workspace A)."""
    ports = {name: free_port() for name in BUILDERS}
    targets = {f"CJO_{name.upper()}_TARGET": f"127.0.0.1:{port}" for name, port in ports.items()}
    service_env = {"CJO_SMTP_PORT": str(free_port()), "CJO_SMTP_TIMEOUT_SECONDS": "1",
                   # The fuzzed providers post to 127.0.0.1:9 (nothing listens).
                   "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS": "true"}
    addresses = {}
    service_only: set[str] = set()
    async with AsyncExitStack() as stack:
        for name, build in BUILDERS.items():  # identity first: the others ask it about keys
            settings = settings_for(name, backend, **targets,
                                    **{f"CJO_{name.upper()}_PORT": str(ports[name])})
            env = Env(service_env)
            app = build(settings, env)
            env.check()
            service_only |= set(app.service_only_methods)
            addresses[name] = await stack.enter_async_context(serving(app))
        yield addresses, service_only


class ServerErrors:
    """Stands in for the interceptors' logger: keeps each unhandled exception a server turned
    into INTERNAL, so a finding names its cause."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[BaseException] = []

    def error(self, event: str, *args: Any, **kwargs: Any) -> Any:
        exc = kwargs.get("exc_info")
        if isinstance(exc, BaseException):
            self.seen.append(exc)
        return self.inner.error(event, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class World:
    """Two workspaces, resources of each, and the values and requests the fuzzer starts from."""

    channels: dict[str, grpc.aio.Channel]
    key_a: str
    key_b: str
    plausible: Plausible = field(default_factory=Plausible)
    seeds: dict[str, list[Message]] = field(default_factory=dict)
    b_names: dict[str, list[str]] = field(default_factory=dict)  # RPC name -> B's resource names
    b: dict[str, str] = field(default_factory=dict)  # B's resources, by kind

    def seed(self, *requests: Message) -> None:
        for request in requests:
            name = request.DESCRIPTOR.name.removesuffix("Request")
            self.seeds.setdefault(name, []).append(request)


def journey(display_name: str, content_key: str) -> journey_pb2.Journey:
    """An event-triggered journey touching most node kinds."""
    return journey_pb2.Journey(
        display_name=display_name,
        event_trigger=journey_pb2.EventTrigger(event_name="signed_up",
                                               filter='event.plan == "pro"'),
        entry_node_id="send",
        nodes=[
            journey_pb2.Node(id="send", send=journey_pb2.SendNode(
                content_key=content_key, channel=common_pb2.CHANNEL_EMAIL, next_node_id="wait")),
            journey_pb2.Node(id="wait", wait=journey_pb2.WaitNode(
                duration=duration_pb2.Duration(seconds=3600), next_node_id="branch")),
            journey_pb2.Node(id="branch", branch=journey_pb2.BranchNode(
                conditions=[journey_pb2.BranchCondition(condition="profile.traits.vip == true",
                                                        next_node_id="tag")],
                else_next_node_id="done")),
            journey_pb2.Node(id="tag", update_profile=journey_pb2.UpdateProfileNode(
                traits=dict_to_struct({"welcomed": True}), next_node_id="done")),
            journey_pb2.Node(id="done", exit=journey_pb2.ExitNode()),
        ],
        re_entry=journey_pb2.RE_ENTRY_POLICY_AFTER_COOLDOWN,
        re_entry_cooldown=duration_pb2.Duration(seconds=86_400))


def api_journey(display_name: str, content_key: str) -> journey_pb2.Journey:
    return journey_pb2.Journey(
        display_name=display_name, api_trigger=journey_pb2.ApiTrigger(), entry_node_id="inbox",
        nodes=[journey_pb2.Node(id="inbox", send=journey_pb2.SendNode(
                   content_key=content_key, channel=common_pb2.CHANNEL_IN_APP,
                   next_node_id="done")),
               journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])


def content_item(key: str, marker: str = "") -> content_item_pb2.ContentItem:
    return content_item_pb2.ContentItem(
        key=key, display_name=f"Welcome {marker}", tags=["onboarding"],
        email=content_item_pb2.EmailTemplate(
            subject="Welcome, {{ profile.first_name }}!",
            html=f"<p>Hi {{{{ profile.first_name }}}} {marker} {{% render 'footer' %}}</p>"),
        in_app=content_item_pb2.InAppTemplate(title=f"Hello {marker}", body="Hi"),
        sms=content_item_pb2.SmsTemplate(text=f"Hi {marker}"))


async def populate(world: World, workspace: str, metadata: Any, marker: str) -> dict[str, str]:
    """Resources of every kind in one workspace; returns their names and ids."""
    ch = world.channels
    identity = id_grpc.IdentityServiceStub(ch["identity"])
    content = ct_grpc.ContentServiceStub(ch["content"])
    orchestration = or_grpc.OrchestrationServiceStub(ch["orchestration"])
    delivery = dl_grpc.DeliveryServiceStub(ch["delivery"])
    got: dict[str, str] = {}

    await content.CreateSnippet(ct_pb.CreateSnippetRequest(snippet=content_item_pb2.Snippet(
        key="footer", source=f"<small>{marker} footer</small>")), metadata=metadata)
    item = (await content.CreateContentItem(ct_pb.CreateContentItemRequest(
        content_item=content_item(f"welcome-{workspace}", marker)), metadata=metadata)).content_item
    await content.PublishContentItem(ct_pb.PublishContentItemRequest(name=item.name),
                                     metadata=metadata)
    got.update(content_item=item.name, content_key=item.key, snippet="snippets/footer")

    ingested = await identity.IngestEvents(id_pb.IngestEventsRequest(events=[event_pb2.Event(
        message_id=f"seed-{workspace}", type=event_pb2.EVENT_TYPE_IDENTIFY,
        identifiers=[event_pb2.Identifier(type="user_id", value=f"user-{workspace}")],
        traits=dict_to_struct({"email": f"{workspace}@example.com", "first_name": marker or "Ada",
                               "plan": "pro", "vip": True}), source="web")]),
        metadata=metadata)
    assert ingested.results[0].status.code == 0, ingested
    profile = (await identity.LookupProfile(id_pb.LookupProfileRequest(
        identifier=event_pb2.Identifier(type="user_id", value=f"user-{workspace}")),
        metadata=metadata)).profile
    got.update(profile=profile.name, profile_id=profile.name.removeprefix("profiles/"))
    segment = (await identity.CreateSegment(id_pb.CreateSegmentRequest(
        segment=segment_pb2.Segment(segment_id=f"pros-{workspace}",
                                    display_name=f"Pros {marker}",
                                    condition='traits.plan == "pro"')),
        metadata=metadata)).segment
    await segment_backfilled(identity, metadata, segment.segment_id)
    got.update(segment=segment.name, segment_id=segment.segment_id)

    events_journey = (await orchestration.CreateJourney(or_pb.CreateJourneyRequest(
        journey=journey(f"Welcome {marker}", item.key)), metadata=metadata)).journey
    await orchestration.PublishJourney(or_pb.PublishJourneyRequest(name=events_journey.name),
                                       metadata=metadata)
    api = (await orchestration.CreateJourney(or_pb.CreateJourneyRequest(
        journey=api_journey(f"Inbox {marker}", item.key)), metadata=metadata)).journey
    await orchestration.PublishJourney(or_pb.PublishJourneyRequest(name=api.name),
                                       metadata=metadata)
    enrollment = (await orchestration.Enroll(or_pb.EnrollRequest(
        journey=api.name, profile_id=got["profile_id"], request_id=f"enroll-{workspace}"),
        metadata=metadata)).enrollment
    got.update(journey=events_journey.name, journey_id=events_journey.journey_id,
               api_journey=api.name, enrollment=enrollment.name,
               enrollment_id=enrollment.enrollment_id, journey_etag=events_journey.etag)

    provider = (await delivery.CreateProvider(dl_pb.CreateProviderRequest(
        provider=provider_pb2.Provider(
            channel=common_pb2.CHANNEL_SMS, kind=provider_pb2.PROVIDER_KIND_TWILIO_SMS,
            display_name=f"Twilio {marker}",
            config={"account_sid": "AC123", "from": "+15005550006",
                    "base_url": "http://127.0.0.1:9"},
            secrets={"auth_token": "secret-token-123"})), metadata=metadata)).provider
    message = (await delivery.SendMessage(dl_pb.SendMessageRequest(
        idempotency_key=f"hello-{workspace}", transactional=True,
        recipient=message_pb2.Recipient(profile_id=got["profile_id"]),
        content=common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_IN_APP,
                                           in_app=common_pb2.RenderedInApp(
                                               title=f"Hello {marker}", body="hi"))),
        metadata=metadata)).message
    got.update(provider=provider.name, provider_id=provider.provider_id, message=message.name,
               message_id=message.message_id, inbox=f"inboxMessages/{message.message_id}")

    # Facts for the reports, as orchestration and delivery would record them: an entry and an
    # experiment with two arms.
    fact = partial(fact_pb2.Fact, profile_id=got["profile_id"], journey_id=got["journey_id"],
                   journey_version=1, enrollment_id=got["enrollment_id"],
                   occur_time=timestamp_pb2.Timestamp(seconds=int(time.time())))
    experiment = f"exp-{workspace}"
    await an_grpc.AnalyticsServiceStub(ch["analytics"]).RecordFacts(an_pb.RecordFactsRequest(
        facts=[fact(fact_id=f"entered-{workspace}", type=fact_pb2.FACT_TYPE_JOURNEY_ENTERED),
               *(fact(fact_id=f"exposed-{workspace}-{arm}",
                      type=fact_pb2.FACT_TYPE_EXPERIMENT_EXPOSED, experiment_id=experiment,
                      arm=arm, control=arm == "b", arm_weight=50.0) for arm in "ab")]),
        metadata=as_service(workspace))
    # Decisioning: two actions on the content item, a point choosing between them, a decision
    # for the profile, exposed.
    decisioning = dc_grpc.DecisioningServiceStub(ch["decisioning"])
    for key in (f"offer-{workspace}", f"plain-{workspace}"):
        await decisioning.CreateAction(dc_pb.CreateActionRequest(action=action_pb2.Action(
            key=key, display_name=f"Offer {marker}", value=10.0,
            eligibility='profile.plan == "pro"', tags=["fuzz"],
            contents=[action_pb2.ActionContent(channel=common_pb2.CHANNEL_EMAIL,
                                               content_key=item.key)],
            contact_limits=[action_pb2.ContactLimit(
                max_exposures=3, period=duration_pb2.Duration(seconds=86_400))])),
            metadata=metadata)
    point = (await decisioning.CreateDecisionPoint(dc_pb.CreateDecisionPointRequest(
        decision_point=decision_point_pb2.DecisionPoint(
            key=f"point-{workspace}", display_name=f"Point {marker}",
            actions=[f"offer-{workspace}", f"plain-{workspace}"],
            reward=decision_point_pb2.Reward(event_name="order_completed",
                                             window=duration_pb2.Duration(seconds=86_400)),
            exposure=decision_point_pb2.EXPOSURE_MODE_REPORTED)),
        metadata=metadata)).decision_point
    decision = (await decisioning.Decide(dc_pb.DecideRequest(
        decision_point=point.name, profile_id=got["profile_id"],
        context=dc_decision_pb2.DecisionContext(channel=common_pb2.CHANNEL_EMAIL),
        request_id=f"decide-{workspace}"), metadata=metadata)).decision
    got.update(action=f"actions/offer-{workspace}", action_key=f"offer-{workspace}",
               decision_point=point.name, decision_point_key=point.key,
               decision=decision.name, decision_id=decision.decision_id)
    # Keys of their own for DeleteApiKey, RotateApiKey and RevokeApiKey (the workspace's first
    # key stays in use).
    workspaces = ws_grpc.WorkspaceServiceStub(ch["identity"])
    spare, rotated, revoked = [(await workspaces.CreateApiKey(ws_pb.CreateApiKeyRequest(
        display_name=name), metadata=metadata)).api_key for name in ("spare", "rotated",
                                                                      "revoked")]
    got.update(experiment_id=experiment, spare_key=spare.name, rotated_key=rotated.name,
               revoked_key=revoked.name)
    return got


async def build_world(addresses: dict[str, str]) -> World:
    channels = {name: grpc.aio.insecure_channel(address) for name, address in addresses.items()}
    workspaces = ws_grpc.WorkspaceServiceStub(channels["identity"])
    keys = {}
    for workspace in ("fuzz-a", "fuzz-b"):
        keys[workspace] = (await workspaces.CreateWorkspace(ws_pb.CreateWorkspaceRequest(
            workspace_id=workspace, display_name=workspace),
            metadata=bearer(SERVICE_TOKEN))).api_key.secret
    world = World(channels, keys["fuzz-a"], keys["fuzz-b"])
    a = await populate(world, "fuzz-a", bearer(world.key_a), "")
    b = world.b = await populate(world, "fuzz-b", bearer(world.key_b), B_MARKER)
    add_plausible(world.plausible, a)
    add_plausible(world.plausible, b)  # B's names and ids: A must never get past NOT_FOUND
    world.b_names = {
        "GetJourney": [b["journey"], b["api_journey"]], "GetContentItem": [b["content_item"]],
        "GetProfile": [b["profile"]], "GetSegment": [b["segment"]],
        "GetProvider": [b["provider"]], "GetMessage": [b["message"]],
        "GetEnrollment": [b["enrollment"]], "ExportProfile": [b["profile"]],
        "GetAction": [b["action"]], "GetDecisionPoint": [b["decision_point"]],
        "GetDecision": [b["decision"]],
    }
    add_seeds(world, a)
    return world


def add_plausible(p: Plausible, got: dict[str, str]) -> None:
    for kind, value in got.items():
        if kind == "rotated_key":
            continue  # no plausible value: RevokeApiKey, fuzzed first, would revoke it
        p.add(value, kind)
        if kind in ("content_item", "snippet", "journey", "api_journey", "profile", "segment",
                    "provider", "message", "enrollment", "inbox", "spare_key", "revoked_key",
                    "action",
                    "decision_point", "decision"):
            p.add(value, "name", "parent")
    p.add(got["journey"], "journey")
    p.add(got["api_journey"], "journey")
    p.add(got["journey_id"], "journey_id")
    p.add(got["profile_id"], "profile_id", "profile_ids", "value")
    p.add(got["content_key"], "content_key", "key")
    p.add(got["segment_id"], "segment_id")
    p.add(got["experiment_id"], "experiment_id")
    p.add(got["journey_etag"], "etag")
    p.add(got["action_key"], "key", "actions", "always_action", "control_action", "action")
    p.add(got["decision_point_key"], "key")
    p.add(got["decision_point"], "decision_point")
    p.add(got["decision_id"], "decision_id")
    for value, fields in (
        ("signed_up", ("event_name", "name")), ("order_completed", ("event_name", "name")),
        ("user_id", ("type",)), ("email", ("type", "trait", "property")),
        ("ada@example.com", ("address", "value")), ("+14155550100", ("address", "value")),
        ('event.plan == "pro"', ("filter", "condition")), ("traits.vip == true", ("condition",)),
        ("profile.traits.vip == true", ("condition",)),
        ("1/0 == 1", ("filter", "condition")), ("[1,2][5] == 1", ("filter", "condition")),
        ("9223372036854775807 + 1 > 0", ("filter", "condition")),
        ('int("x") == 1', ("filter", "condition")), ("true", ("filter", "condition")),
        ("size(traits) > 0", ("filter", "condition")), ("en", ("locale", "default_locale")),
        ("fr-FR", ("locale", "default_locale")), ("xx-INVALID", ("locale",)),
        ("Europe/Paris", ("time_zone", "default_time_zone")),
        ("Mars/Olympus", ("time_zone", "default_time_zone")),
        ("0 9 * * *", ("cron",)), ("*/1 * * * * *", ("cron",)), ("22:00", ("start", "end")),
        ("25:61", ("start", "end")), ("EUR", ("currency",)), ("euro", ("currency",)),
        *((expression, ("filter", "condition")) for expression in EXPRESSIONS),
        *((template, ("html", "subject", "text", "source", "body", "title", "json_body",
                      "preheader")) for template in TEMPLATES),
        ("total", ("revenue_property", "property")), ("newsletter", ("topic",)),
        ("fuzz-a", ("workspace_id",)), ("workspaces/fuzz-a", ("name",)),
        ("contentSettings", ("name",)), ("r-1", ("request_id", "idempotency_key")),
        ("r-2", ("request_id", "idempotency_key")), ("https://example.com/hook",
                                                      ("status_webhook_url", "link", "url")),
    ):
        p.add(value, *fields)


# Expressions and templates that parse but are costly, recursive or fail at run time.
EXPRESSIONS = (
    "(" * 400 + "1" + ")" * 400 + " == 1", "1" + " + 1" * 3000 + " > 0",
    "!" * 2000 + "true", "[" * 300 + "1" + "]" * 300 + " == []",
    "profile.traits.a.b.c.d == 1", "has(event.items) && event.items.all(i, i > 0)",
    "[1, 2, 3].map(x, x * 2).size() > 0", 'string(1.0/0.0) == "inf"',
    "timestamp('9999-12-31T23:59:59Z') + duration('1s') > timestamp('2020-01-01T00:00:00Z')",
    "duration('315576000000s') > duration('0s')",
    'matches("aaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", "(a+)+$")',
    "double(9223372036854775807) > 0.0", "uint(-1) > 0u", "dyn(1) == dyn('1')",
    "profile.traits == {}", "size('x' + 'x') > 1", "event.plan.startsWith('p')",
)
TEMPLATES = (
    "{% for i in (1..100000000) %}x{% endfor %}", "{% render 'footer' %}" * 50,
    "{% render 'missing' %}", "{% include 'footer' %}", "{% if a %}" * 300 + "x" +
    "{% endif %}" * 300, "{{ 'x' | append: 'y' | upcase | truncate: -1 }}",
    "{{ 1 | divided_by: 0 }}", "{{ 9223372036854775807 | plus: 1 }}", "{{ x | date: '%Q' }}",
    "{% assign a = (1..999999999) %}{{ a | size }}", "{{ profile.traits | json }}",
    "{% capture c %}{% endcapture %}{{ c | split: '' | join: ',' }}", "{{ ",
    "{{ 'a' | money: 'XXX' }}", "{{ '2020-01-01' | date: '%Y' | times: 1e308 }}",
)


def add_seeds(world: World, a: dict[str, str]) -> None:
    """A few valid requests per RPC, for mutation (RPCs without seeds are fuzzed from their
    descriptors alone)."""
    now = int(time.time())
    window = reports_pb2.TimeWindow(start_time={"seconds": now - 86_400},
                                    end_time={"seconds": now + 86_400})
    email = common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL, content_key=a["content_key"],
        email=common_pb2.RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"))
    send = dl_pb.SendMessageRequest(
        idempotency_key="seed-send", recipient=message_pb2.Recipient(
            profile_id=a["profile_id"], address="ada@example.com"), content=email,
        journey_id=a["journey_id"], enrollment_id=a["enrollment_id"], time_zone="Europe/Paris")
    render = ct_pb.RenderContentRequest(
        name=a["content_item"], channel=common_pb2.CHANNEL_EMAIL,
        context=ct_pb.RenderContext(profile_id=a["profile_id"],
                                    traits=dict_to_struct({"first_name": "Ada"}),
                                    event=dict_to_struct({"plan": "pro"})), locale="en")
    track = event_pb2.Event(
        message_id="seed-track", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
        identifiers=[event_pb2.Identifier(type="user_id", value="user-fuzz-a")],
        properties=dict_to_struct({"plan": "pro", "total": 12.5}),
        traits=dict_to_struct({"email": "ada@example.com"}), timestamp={"seconds": now},
        source="web")
    scheduled = journey_pb2.Journey(
        display_name="Weekly", scheduled_trigger=journey_pb2.ScheduledTrigger(
            segment_id=a["segment_id"], cron="0 9 * * 1", time_zone="Europe/Paris"),
        entry_node_id="done", nodes=[journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])
    offer = action_pb2.Action(
        key="fresh-offer", display_name="Fresh", value=5.0, lever=1.5,
        eligibility='profile.plan == "pro" && context.channel == "email"',
        contents=[action_pb2.ActionContent(channel=common_pb2.CHANNEL_EMAIL,
                                           content_key=a["content_key"])],
        start_time={"seconds": now - 86_400}, end_time={"seconds": now + 86_400 * 30},
        contact_limits=[action_pb2.ContactLimit(max_exposures=1,
                                                period=duration_pb2.Duration(seconds=3600))],
        budget=100, topic="newsletter", tags=["fuzz"])
    point = decision_point_pb2.DecisionPoint(
        key="fresh-point", display_name="Fresh", actions=[a["action_key"], "fresh-offer"],
        arbitration=decision_point_pb2.Arbitration(
            formula="propensity * value * lever", context_weight="1.0"),
        max_actions=2, exploration=decision_point_pb2.Exploration(
            method=decision_point_pb2.EXPLORATION_METHOD_EPSILON_GREEDY, epsilon=0.1),
        model=decision_point_pb2.Model(features=["plan", "channel", "hour"],
                                       prior_propensity=0.05),
        reward=decision_point_pb2.Reward(event_name="order_completed",
                                         filter="event.total > 10",
                                         window=duration_pb2.Duration(seconds=86_400)),
        exposure=decision_point_pb2.EXPOSURE_MODE_ON_DECIDE,
        control_action=a["action_key"], min_control_share=0.1)
    context = dc_decision_pb2.DecisionContext(
        channel=common_pb2.CHANNEL_EMAIL, attributes=dict_to_struct({"page": "home"}),
        time={"seconds": now}, journey_id=a["journey_id"],
        enrollment_id=a["enrollment_id"], node_id="send")
    decide = dc_pb.DecideRequest(decision_point=a["decision_point"], profile_id=a["profile_id"],
                                 profile=dict_to_struct({"plan": "pro"}), context=context,
                                 request_id="r-1")
    world.seed(
        dc_pb.CreateActionRequest(action=offer, request_id="r-1"),
        dc_pb.GetActionRequest(name=a["action"]), dc_pb.ListActionsRequest(page_size=5),
        dc_pb.UpdateActionRequest(
            action=action_pb2.Action(name=a["action"], display_name="Renamed", value=12.0),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "value"])),
        dc_pb.UpdateActionRequest(action=action_pb2.Action(
            name="actions/upserted", key="upserted", display_name="Upserted"),
            allow_missing=True, request_id="r-2"),
        dc_pb.DeleteActionRequest(name="actions/fresh-offer", request_id="r-1"),
        dc_pb.CreateDecisionPointRequest(decision_point=point, request_id="r-1"),
        dc_pb.GetDecisionPointRequest(name=a["decision_point"]),
        dc_pb.ListDecisionPointsRequest(page_size=5),
        dc_pb.UpdateDecisionPointRequest(
            decision_point=decision_point_pb2.DecisionPoint(
                name=a["decision_point"], display_name="Renamed", max_actions=2),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "max_actions"])),
        dc_pb.DeleteDecisionPointRequest(name="decisionPoints/fresh-point"),
        decide, dc_pb.DecideRequest(decision_point=a["decision_point"],
                                    profile_id=a["profile_id"], context=context),
        dc_pb.BatchDecideRequest(decision_point=a["decision_point"], context=context, items=[
            dc_pb.DecideItem(profile_id=a["profile_id"], request_id="r-2"),
            dc_pb.DecideItem(profile_id="nobody", profile=dict_to_struct({"plan": "pro"}))]),
        dc_pb.GetDecisionRequest(name=a["decision"]),
        dc_pb.RecordExposuresRequest(exposures=[dc_pb.Exposure(
            decision_id=a["decision_id"], expose_time={"seconds": now})]),
        dc_pb.RecordEventsRequest(events=[or_pb.ForwardedEvent(
            event_id="seed-reward", profile_id=a["profile_id"], event=track)]),
        dc_pb.RecordMessageFactsRequest(facts=[fact_pb2.Fact(
            fact_id="seed-open", type=fact_pb2.FACT_TYPE_MESSAGE_OPENED,
            profile_id=a["profile_id"], message_id=a["message_id"],
            decision_id=a["decision_id"], occur_time={"seconds": now},
            channel=common_pb2.CHANNEL_EMAIL)]),
        dc_pb.GetSendTimesRequest(profile_ids=[a["profile_id"], "nobody"],
                                  channel=common_pb2.CHANNEL_EMAIL,
                                  earliest_time={"seconds": now},
                                  max_delay=duration_pb2.Duration(seconds=86_400)),
        dc_pb.EvaluatePolicyRequest(decision_point=a["decision_point"],
                                    policy=evaluation_pb2.TargetPolicy(
                                        uniform_random=evaluation_pb2.UniformRandomPolicy()),
                                    start_time={"seconds": now - 86_400},
                                    end_time={"seconds": now + 86_400}, confidence_level=0.95),
        dc_pb.EvaluatePolicyRequest(decision_point=a["decision_point"],
                                    policy=evaluation_pb2.TargetPolicy(
                                        alternative=evaluation_pb2.AlternativePolicy(
                                            arbitration=point.arbitration,
                                            levers={a["action_key"]: 2.0},
                                            values={a["action_key"]: 3.0}))),
        dc_pb.GetDecisionReportRequest(decision_point=a["decision_point"],
                                       start_time={"seconds": now - 86_400},
                                       end_time={"seconds": now + 86_400},
                                       bucket=duration_pb2.Duration(seconds=3600)),
        an_pb.RecordFactsRequest(facts=[fact_pb2.Fact(
            fact_id="seed-fact", type=fact_pb2.FACT_TYPE_MESSAGE_SENT,
            profile_id=a["profile_id"], journey_id=a["journey_id"],
            message_id=a["message_id"], occur_time={"seconds": now},
            channel=common_pb2.CHANNEL_EMAIL, content_key=a["content_key"])]),
        an_pb.GetJourneyReportRequest(journey=a["journey"]),
        reports_pb2.GetJourneyFunnelRequest(journey=a["journey"], window=window),
        reports_pb2.GetChannelPerformanceRequest(journey=a["journey"], window=window),
        reports_pb2.GetExperimentResultsRequest(experiment_id=a["experiment_id"],
                                                expected_weights={"a": 50, "b": 50},
                                                control_arm="a"),
        reports_pb2.GetAttributionRequest(window=window, lookback_days=7,
                                          models=[reports_pb2.ATTRIBUTION_MODEL_LAST_TOUCH]),
        ct_pb.CreateContentItemRequest(content_item=content_item("fresh"), request_id="r-1"),
        ct_pb.GetContentItemRequest(name=a["content_item"]),
        ct_pb.ListContentItemsRequest(page_size=10, tag="onboarding"),
        ct_pb.UpdateContentItemRequest(
            content_item=content_item(a["content_key"]).__class__(
                name=a["content_item"], display_name="Renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"])),
        ct_pb.DeleteContentItemRequest(name="contentItems/fresh"),
        render, ct_pb.BatchRenderContentRequest(requests=[render, render]),
        ct_pb.PublishContentItemRequest(name=a["content_item"]),
        ct_pb.RollbackContentItemRequest(name=a["content_item"], version=1),
        ct_pb.ListContentItemVersionsRequest(parent=a["content_item"], page_size=5),
        ct_pb.PreviewContentRequest(name=a["content_item"], channel=common_pb2.CHANNEL_EMAIL,
                                    context=render.context),
        ct_pb.CreateSnippetRequest(snippet=content_item_pb2.Snippet(key="header", source="hi")),
        ct_pb.GetSnippetRequest(name="snippets/footer"), ct_pb.ListSnippetsRequest(page_size=5),
        ct_pb.UpdateSnippetRequest(snippet=content_item_pb2.Snippet(name="snippets/footer",
                                                                     source="bye")),
        ct_pb.DeleteSnippetRequest(name="snippets/header"),
        ct_pb.GetContentSettingsRequest(name="contentSettings"),
        ct_pb.UpdateContentSettingsRequest(
            content_settings=content_item_pb2.ContentSettings(default_locale="fr-FR"),
            update_mask=field_mask_pb2.FieldMask(paths=["default_locale"])),
        send, dl_pb.BatchSendMessagesRequest(requests=[send, send]),
        dl_pb.GetMessageRequest(name=a["message"]),
        dl_pb.ListMessagesRequest(profile_id=a["profile_id"], page_size=5),
        dl_pb.CreateProviderRequest(provider=provider_pb2.Provider(
            channel=common_pb2.CHANNEL_PUSH, kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
            config={"url": "http://127.0.0.1:9/push"}, secrets={"api_key": "k-123"})),
        dl_pb.GetProviderRequest(name=a["provider"]),
        dl_pb.ListProvidersRequest(channel=common_pb2.CHANNEL_SMS),
        dl_pb.UpdateProviderRequest(
            provider=provider_pb2.Provider(name=a["provider"], priority=2),
            update_mask=field_mask_pb2.FieldMask(paths=["priority"])),
        dl_pb.DeleteProviderRequest(name=a["provider"]),
        dl_pb.GetDeliveryPolicyRequest(),
        dl_pb.UpdateDeliveryPolicyRequest(policy=policy_pb2.DeliveryPolicy(
            frequency_caps=[policy_pb2.FrequencyCap(channel=common_pb2.CHANNEL_EMAIL,
                                                    max_messages=3, window_seconds=86_400)],
            quiet_hours=policy_pb2.QuietHours(start="22:00", end="08:00",
                                              default_time_zone="Europe/Paris"))),
        dl_pb.ListInboxMessagesRequest(profile_id=a["profile_id"], page_size=5),
        dl_pb.MarkInboxMessageRequest(name=a["inbox"], state=inbox_pb2.INBOX_STATE_READ),
        dl_pb.SubscribeInboxRequest(profile_id=a["profile_id"]),
        dl_pb.EraseProfilesRequest(profile_ids=["nobody"]),
        id_pb.IngestEventsRequest(events=[track]),
        id_pb.GetProfileRequest(name=a["profile"]),
        id_pb.BatchGetProfilesRequest(names=[a["profile"], "profiles/nobody"]),
        id_pb.LookupProfileRequest(identifier=event_pb2.Identifier(type="user_id",
                                                                   value="user-fuzz-a")),
        id_pb.ListProfileEventsRequest(parent=a["profile"], page_size=5),
        id_pb.BatchCheckConsentRequest(queries=[consent_pb2.ConsentQuery(
            profile_id=a["profile_id"], channel=common_pb2.CHANNEL_EMAIL, topic="newsletter")]),
        id_pb.GetIdentitySettingsRequest(),
        id_pb.UpdateIdentitySettingsRequest(settings=identity_settings_pb2.IdentitySettings(
            default_phone_region="FR",
            computed_traits=[identity_settings_pb2.ComputedTrait(
                name="orders_30d", aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_COUNT,
                event_name="order_completed", window=duration_pb2.Duration(seconds=30 * 86_400))],
            conversion_events=[identity_settings_pb2.ConversionEvent(
                event_name="order_completed", revenue_property="total", currency="EUR")])),
        id_pb.ListProfilesRequest(filter='traits.plan == "pro"', page_size=5),
        id_pb.CreateSegmentRequest(segment=segment_pb2.Segment(
            segment_id="vips", display_name="VIPs", condition="traits.vip == true")),
        id_pb.GetSegmentRequest(name=a["segment"]), id_pb.ListSegmentsRequest(page_size=5),
        id_pb.UpdateSegmentRequest(
            segment=segment_pb2.Segment(name=a["segment"], display_name="Pros",
                                        condition='traits.plan in ["pro", "max"]'),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "condition"])),
        id_pb.DeleteSegmentRequest(name="segments/vips"),
        id_pb.ListSegmentMembersRequest(parent=a["segment"], page_size=5),
        id_pb.DeleteProfileRequest(name=a["profile"]),
        id_pb.ExportProfileRequest(name=a["profile"]),
        dead_letter_service_pb2.ListDeadLettersRequest(page_size=10),
        dead_letter_service_pb2.RetryDeadLettersRequest(ids=[1, 2], request_id="r-1"),
        dead_letter_service_pb2.PurgeDeadLettersRequest(ids=[1]),
        ws_pb.CreateWorkspaceRequest(workspace_id="fuzz-c", display_name="C"),
        ws_pb.GetWorkspaceRequest(name="workspaces/fuzz-a"),
        ws_pb.CreateApiKeyRequest(display_name="ci"),
        ws_pb.AuthenticateApiKeyRequest(secret=world.key_a),
        ws_pb.DeleteApiKeyRequest(name=a["spare_key"]),
        ws_pb.RotateApiKeyRequest(name=a["rotated_key"],
                                  overlap=duration_pb2.Duration(seconds=3600), request_id="r-1"),
        ws_pb.RevokeApiKeyRequest(name=a["revoked_key"], request_id="r-1"),
        or_pb.CreateJourneyRequest(journey=journey("Fresh", a["content_key"])),
        or_pb.CreateJourneyRequest(journey=scheduled),
        or_pb.GetJourneyRequest(name=a["journey"]), or_pb.ListJourneysRequest(page_size=5),
        or_pb.UpdateJourneyRequest(
            journey=journey_pb2.Journey(name=a["journey"], display_name="Renamed",
                                        goal=journey_pb2.Goal(
                                            event_name="order_completed",
                                            window=duration_pb2.Duration(seconds=86_400))),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "goal"])),
        or_pb.PublishJourneyRequest(name=a["journey"]),
        or_pb.PauseJourneyRequest(name=a["journey"]),
        or_pb.ResumeJourneyRequest(name=a["journey"]),
        or_pb.EnrollRequest(journey=a["api_journey"], profile_id=a["profile_id"],
                            profile_traits=dict_to_struct({"first_name": "Ada"}),
                            properties=dict_to_struct({"plan": "pro"}), request_id="r-2"),
        or_pb.ArchiveJourneyRequest(name=a["api_journey"]),
        or_pb.HandleEventsRequest(events=[or_pb.ForwardedEvent(
            event_id="seed-event", profile_id=a["profile_id"], event=track,
            profile_traits=dict_to_struct({"plan": "pro"}))]),
        or_pb.GetEnrollmentRequest(name=a["enrollment"]),
        or_pb.ListEnrollmentsRequest(parent=a["api_journey"], profile_id=a["profile_id"]),
        or_pb.ListScheduleOccurrencesRequest(parent=a["journey"], page_size=5),
        or_pb.GetScheduleOccurrenceRequest(
            name=f"{a['journey']}/occurrences/v1-20260309T080000Z"),
    )


def named_fields(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    """The field violations of an error's rich status (``grpc-status-details-bin``)."""
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return field_violations(status_pb2.Status.FromString(value))
    return {}


class Caller:
    """Sends one request of any RPC through its channel and records what went wrong."""

    def __init__(self, world: World, errors: ServerErrors, findings: Findings,
                 service_only: set[str]) -> None:
        self.world = world
        self.errors = errors
        self.findings = findings
        self.service_only = service_only

    def metadata(self, rpc: Rpc) -> Any:
        return as_service("fuzz-a") if rpc.path in self.service_only else bearer(self.world.key_a)

    def channel(self, rpc: Rpc) -> grpc.aio.Channel:
        return self.world.channels[rpc.server or rpc.service.split(".")[1]]

    async def call(self, rpc: Rpc, request: Message) -> None:
        self.errors.seen.clear()
        try:
            answers = await self._send(rpc, request)
            code: grpc.StatusCode | None = grpc.StatusCode.OK
            details = ""
            violations = {}
        except grpc.aio.AioRpcError as exc:
            answers, code, details = [], exc.code(), exc.details() or ""
            violations = named_fields(exc)
        except DecodeError:
            # The server answered, but with more nesting than a client can decode.
            answers, code, details = [], None, ""
        except (TypeError, ValueError, RecursionError):
            return  # the client library could not encode it: it never reaches a server
        self.findings.calls += 1
        if code is None:
            self.findings.codes["UNREADABLE"] += 1
            self.findings.add(rpc.label, "OK but UNREADABLE", "the answer is nested deeper "
                              "than protobuf decodes", "", request)
            return
        self.findings.codes[code.name] += 1
        self.findings.ok[rpc.label] += code == grpc.StatusCode.OK
        for answer in answers:
            if B_MARKER.encode() in answer.SerializeToString():
                self.findings.breaches.append(f"{rpc.label}: {answer}"[:400])
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.DEADLINE_EXCEEDED):
            if self.errors.seen:
                cause, detail = describe(self.errors.seen[0])
            else:
                cause, detail = f"status details: {details[:120]}", ""
            self.findings.add(rpc.label, code.name, cause, detail, request)
        elif code == grpc.StatusCode.INVALID_ARGUMENT and not violations:
            self.findings.add(rpc.label, code.name, "no field violation names the field",
                              details[:160], request)
        elif code == grpc.StatusCode.UNIMPLEMENTED:
            self.findings.add(rpc.label, code.name, "no service under test answers it",
                              details[:160], request)


    async def _send(self, rpc: Rpc, request: Message) -> list[Message]:
        channel, metadata = self.channel(rpc), self.metadata(rpc)
        serialize, parse = type(request).SerializeToString, rpc.response_class.FromString
        if rpc.method.server_streaming:
            if rpc.method.client_streaming:
                stream = channel.stream_stream(rpc.path, request_serializer=serialize,
                                               response_deserializer=parse)(
                    iter([request]), metadata=metadata, timeout=CALL_TIMEOUT)
            else:
                stream = channel.unary_stream(rpc.path, request_serializer=serialize,
                                              response_deserializer=parse)(
                    request, metadata=metadata, timeout=CALL_TIMEOUT)
            # Open it, send the request, take what comes within a moment, hang up.
            try:
                first = await asyncio.wait_for(stream.read(), 0.3)
            except TimeoutError:
                first = None
            finally:
                stream.cancel()
            return [first] if isinstance(first, Message) else []
        if rpc.method.client_streaming:
            answer = await channel.stream_unary(rpc.path, request_serializer=serialize,
                                                response_deserializer=parse)(
                iter([request]), metadata=metadata, timeout=CALL_TIMEOUT)
        else:
            answer = await channel.unary_unary(rpc.path, request_serializer=serialize,
                                               response_deserializer=parse)(
                request, metadata=metadata, timeout=CALL_TIMEOUT)
        return [answer]


def fuzz(rpcs: Sequence[Rpc], world: World, caller: Caller, loop: asyncio.AbstractEventLoop,
         examples: int) -> None:
    """Run hypothesis over every RPC (in a worker thread; calls are made on the servers'
    event loop). Nothing raises here: findings are collected and asserted at the end."""
    fuzzer = Fuzzer(world.plausible, int(time.time()))
    mask_paths(rpcs)

    def on_loop(coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, loop).result()

    for rpc in rpcs:
        seeds = world.seeds.get(rpc.name, [])
        if seeds:  # identical concurrent repeats of a valid request
            async def repeats(rpc: Rpc = rpc, seed: Message = seeds[0]) -> None:
                await asyncio.gather(*(caller.call(rpc, seed) for _ in range(REPEATS)))
            on_loop(repeats())

        run_hypothesis(rpc, requests(fuzzer, rpc, seeds),
                       lambda rpc, request: on_loop(caller.call(rpc, request)), examples)


def run_hypothesis(rpc: Rpc, strategy: Any, call: Any, examples: int) -> None:
    """``examples`` requests from ``strategy``, each passed to ``call``; the same ones on every
    run unless CJO_FUZZ_SEED asks for others."""
    @settings(max_examples=examples, deadline=None, derandomize=not SEED, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
              print_blob=False)
    @given(strategy)
    def run(request: Message) -> None:
        call(rpc, request)

    if SEED:
        run = seed(int(SEED))(run)
    run()


async def isolation(world: World) -> list[str]:
    """B's resources, asked for by name with A's key, are never shown (NOT_FOUND, or A's own
    resource of the same name)."""
    breaches = []
    by_name = {rpc.name: rpc for rpc in all_rpcs()}

    def get(method: str) -> Any:
        rpc = by_name[method]
        return world.channels[rpc.service.split(".")[1]].unary_unary(
            rpc.path, request_serializer=rpc.request_class.SerializeToString,
            response_deserializer=rpc.response_class.FromString)

    for method, names in world.b_names.items():
        request_class = by_name[method].request_class
        for name in names:
            try:
                answer = await get(method)(request_class(name=name),  # type: ignore[call-arg]
                                           metadata=bearer(world.key_a))
                # Names chosen by the caller (content keys) can exist in both workspaces; A's
                # own resource of that name is no breach, B's data would be.
                if B_MARKER.encode() in answer.SerializeToString():
                    breaches.append(f"{method}({name}) with A's key answered {answer}"[:300])
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.NOT_FOUND,
                                      grpc.StatusCode.PERMISSION_DENIED,
                                      grpc.StatusCode.INVALID_ARGUMENT):
                    breaches.append(f"{method}({name}) with A's key: {exc.code().name}")
            try:  # and nothing A did removed it
                await get(method)(request_class(name=name),  # type: ignore[call-arg]
                                  metadata=bearer(world.key_b))
            except grpc.aio.AioRpcError as exc:
                breaches.append(f"{method}({name}) with B's own key: {exc.code().name}")
    return breaches


async def still_flowing(world: World, timeout: float = 30.0) -> str:
    """Whatever A's fuzzing left behind (poison journeys, templates, segments, dead letters),
    B's work still flows through every worker: an event enrolls a new profile in B's journey,
    and an enrollment in B's API journey reaches that profile's in-app inbox (identity ->
    orchestration -> content -> delivery). Returns what did not happen ("" when all did)."""
    b, metadata = world.b, bearer(world.key_b)
    identity = id_grpc.IdentityServiceStub(world.channels["identity"])
    orchestration = or_grpc.OrchestrationServiceStub(world.channels["orchestration"])
    delivery = dl_grpc.DeliveryServiceStub(world.channels["delivery"])
    user = event_pb2.Identifier(type="user_id", value="after-the-fuzzing")
    await identity.IngestEvents(id_pb.IngestEventsRequest(events=[event_pb2.Event(
        message_id="after-the-fuzzing", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
        identifiers=[user], properties=dict_to_struct({"plan": "pro"}),
        traits=dict_to_struct({"email": "late@example.com"}), source="web")]),
        metadata=metadata)
    profile_id = (await identity.LookupProfile(id_pb.LookupProfileRequest(identifier=user),
                                               metadata=metadata)).profile.name.split("/")[-1]

    async def enrolled() -> bool:
        listed = await orchestration.ListEnrollments(or_pb.ListEnrollmentsRequest(
            parent=b["journey"], profile_id=profile_id), metadata=metadata)
        return bool(listed.enrollments)

    async def in_inbox() -> bool:
        listed = await delivery.ListInboxMessages(dl_pb.ListInboxMessagesRequest(
            profile_id=profile_id), metadata=metadata)
        return bool(listed.messages)

    try:
        await eventually(enrolled, timeout=timeout)
    except AssertionError:
        return "an event of B's did not enroll its profile in B's event-triggered journey"
    await orchestration.Enroll(or_pb.EnrollRequest(
        journey=b["api_journey"], profile_id=profile_id, request_id="after-the-fuzzing"),
        metadata=metadata)
    try:
        await eventually(in_inbox, timeout=timeout)
    except AssertionError:
        return "an enrollment in B's API journey never reached the profile's in-app inbox"
    return ""


def served(rpcs: Sequence[Rpc]) -> list[Rpc]:
    """Each RPC with the service answering it: the shared cjo.common.v1 services (dead letters)
    are fuzzed in every service. An RPC of a package no service here runs is an error."""
    found, unserved = [], []
    for rpc in rpcs:
        package = rpc.service.split(".")[1]
        if package in BUILDERS:
            names = [package]
        elif package in SHARED_PACKAGES:
            names = list(BUILDERS)
        else:
            unserved.append(rpc.path)
            continue
        found += [replace(rpc, server=name) for name in names]
    if unserved:
        raise AssertionError(f"RPCs of services the fuzzer does not run (add their build to "
                             f"BUILDERS): {unserved}")
    return found


def test_every_rpc_of_the_protos_is_fuzzed_by_a_running_service() -> None:
    """The RPC list comes from the descriptors: every one of them lands on a service here."""
    rpcs = all_rpcs()
    packages = {rpc.service.split(".")[1] for rpc in rpcs}
    assert packages == set(BUILDERS) | SHARED_PACKAGES
    labels = {rpc.label for rpc in served(rpcs)}
    for rpc in rpcs:
        assert any(label.startswith(f"{rpc.name}@") or label == rpc.name for label in labels)
    assert {"Decide", "BatchDecide", "EvaluatePolicy", "GetDecisionReport", "GetSendTimes",
            "RecordMessageFacts", "CreateAction", "UpdateDecisionPoint"} <= {
        rpc.name for rpc in rpcs}


def reproduce(backend: Backend) -> Any:
    def command(label: str) -> str:
        rpc = label.split("@")[0]
        return (f"CJO_FUZZ_EXAMPLES={EXAMPLES} CJO_FUZZ_RPC={rpc} .venv/bin/python -m pytest "
                f"tests/platform/test_fuzz.py -k {backend.kind}")
    return command


async def test_no_request_is_answered_internal_or_unknown(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    errors = ServerErrors(interceptors.log)
    monkeypatch.setattr(interceptors, "log", errors)
    rpcs = [rpc for rpc in served(all_rpcs()) if not ONLY or rpc.name in ONLY]
    rpcs.sort(key=lambda rpc: rpc.name.startswith(RUNS_OF_LAST))
    findings = Findings()
    started = time.monotonic()
    async with six_services(backend) as (addresses, service_only):
        world = await build_world(addresses)
        caller = Caller(world, errors, findings, service_only)
        # The B resources exist before A starts fuzzing, and stay B's only.
        before = await isolation(world)
        with structlog.contextvars.bound_contextvars():
            await asyncio.to_thread(fuzz, rpcs, world, caller, asyncio.get_running_loop(),
                                    EXAMPLES)
        after = await isolation(world)
        findings.breaches += before + after
        stalled = await still_flowing(world)
        for channel in world.channels.values():
            await channel.close()
    report = findings.report(reproduce(backend))
    report += f"\n({len(rpcs)} RPCs, {time.monotonic() - started:.0f} s, {backend.kind})"
    if REPORT:
        Path(REPORT).write_text(report + "\n")
    print(report)
    assert findings.calls > len(rpcs) * EXAMPLES // 2, report
    assert not findings.classes and not findings.breaches, report
    assert not stalled, f"after the fuzzing, workspace B's work stalled: {stalled}"


class Broken(ct_grpc.ContentServiceServicer):
    """A content service with three bugs: a snippet name with NUL in it crashes it, an empty
    name is refused without naming the field, and snippet "leak" shows workspace B's data."""

    async def GetSnippet(self, request: Any, context: Any) -> Any:
        if "\x00" in request.name:
            await context.abort(grpc.StatusCode.INTERNAL, "boom")
        if not request.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
        source = B_MARKER if request.name == "snippets/leak" else ""
        return ct_pb.GetSnippetResponse(snippet=content_item_pb2.Snippet(name=request.name,
                                                                         source=source))


async def test_the_fuzzer_reports_each_failure_with_a_request_that_causes_it() -> None:
    server = grpc.aio.server()
    ct_grpc.add_ContentServiceServicer_to_server(Broken(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            world = World({"content": channel}, "cjo_key_a", "cjo_key_b")
            world.plausible.add("snippets/leak", "name")
            world.seed(ct_pb.GetSnippetRequest(name="snippets/footer"))
            findings = Findings()
            caller = Caller(world, ServerErrors(interceptors.log), findings, set())
            rpc = next(rpc for rpc in all_rpcs() if rpc.name == "GetSnippet")
            await asyncio.to_thread(fuzz, [rpc], world, caller, asyncio.get_running_loop(), 60)
    finally:
        await server.stop(None)
    assert sorted(findings.classes) == [
        ("GetSnippet", "INTERNAL", "status details: boom"),
        ("GetSnippet", "INVALID_ARGUMENT", "no field violation names the field")]
    crash, unnamed = (findings.classes[key] for key in sorted(findings.classes))
    assert "\x00" in crash.request.name  # type: ignore[attr-defined]
    assert unnamed.request.name == "" and unnamed.detail == "bad request"  # type: ignore[attr-defined]
    assert findings.breaches and findings.breaches[0].startswith("GetSnippet: ")
