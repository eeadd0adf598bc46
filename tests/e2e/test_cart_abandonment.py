"""The cart-abandonment journey (examples/journeys/cart_abandonment.yaml) through the five
services as separate processes, on one test clock they all read (CJO_TEST_CLOCK_FILE).

cart_updated -> wait up to 1 h for order_completed -> on timeout, cart_value > 50 -> 09:00
local time -> a localized email -> wait 1 day for email_opened -> else a push (FCM-shaped, at a
real HTTP server) -> done; order_completed ends it anywhere, and counts as the goal for 3 days.

Four people: dan buys within the hour, cy's cart is small, bob opens the email (the test GETs
the open pixel out of the mail at the SMTP server, as a mail client would), ada (German) never
opens, gets the push, and buys on day 2.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import grpc
import pytest
from http_sink import Answer, HttpSink, Request, http_sink

from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb2
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.analytics.v1 import fact_pb2, reports_pb2
from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.delivery.v1 import (
    delivery_service_pb2,
    delivery_service_pb2_grpc,
    message_pb2,
    provider_pb2,
)
from cjo.identity.v1 import (
    event_pb2,
    identity_service_pb2,
    identity_service_pb2_grpc,
    identity_settings_pb2,
)
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import enrollment_pb2, orchestration_service_pb2
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_orchestration import journeyfile
from cjo_platform.protobuf import dict_to_struct
from suite import SERVICES, STATE_TIMEOUT, Suite, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually, free_port

pytestmark = pytest.mark.e2e

JOURNEY_FILE = (Path(__file__).resolve().parents[2] / "examples" / "journeys"
                / "cart_abandonment.yaml")
# A Monday, 07:00 in Berlin: the journey's 09:00 local-time wait falls on the same morning.
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
COMPLETED = enrollment_pb2.ENROLLMENT_STATE_COMPLETED
EXITED = enrollment_pb2.ENROLLMENT_STATE_EXITED
WAITING = enrollment_pb2.STEP_OUTCOME_WAITING

PEOPLE: dict[str, dict[str, Any]] = {
    # user id: traits, cart value
    "ada": {"traits": {"email": "ada@example.com", "first_name": "Ada", "locale": "de-DE",
                       "push_token": "ada-phone-token"}, "cart": 80},
    "bob": {"traits": {"email": "bob@example.com", "first_name": "Bob", "locale": "en",
                       "push_token": "bob-phone-token"}, "cart": 75},
    "cy": {"traits": {"email": "cy@example.com", "first_name": "Cy"}, "cart": 20},
    "dan": {"traits": {"email": "dan@example.com", "first_name": "Dan"}, "cart": 90},
}

# Fast workers: the test waits on them after every move of the clock.
FAST = {"CJO_ORCHESTRATION_POLL_SECONDS": "0.1", "CJO_DELIVERY_POLL_SECONDS": "0.1"}


def email_template(subject: str, greeting: str) -> content_item_pb2.EmailTemplate:
    return content_item_pb2.EmailTemplate(
        subject=subject + ", {{ profile.first_name }}",
        html=f"<p>{greeting} {{{{ profile.first_name }}}}.</p>"
             '<p><a href="https://shop.example/cart">Cart</a></p>',
        text=greeting)


def cart_content() -> content_item_pb2.ContentItem:
    return content_item_pb2.ContentItem(
        key="cart",
        email=email_template("Your cart is waiting", "You left something,"),
        localizations=[content_item_pb2.Localization(locale="de", email=email_template(
            "Dein Warenkorb wartet", "Du hast etwas vergessen,"))])


def nudge_content() -> content_item_pb2.ContentItem:
    return content_item_pb2.ContentItem(
        key="cart_nudge",
        push=content_item_pb2.PushTemplate(
            title="Still thinking, {{ profile.first_name }}?",
            body="Your cart of {{ event.cart_value }} is still there.",
            deep_link="shop://cart"),
        email=email_template("Still thinking", "Your cart is still there,"),
        localizations=[content_item_pb2.Localization(
            locale="de",
            push=content_item_pb2.PushTemplate(
                title="Noch unentschlossen, {{ profile.first_name }}?",
                body="Dein Warenkorb über {{ event.cart_value }} wartet.",
                deep_link="shop://cart"),
            email=email_template("Noch unentschlossen", "Dein Warenkorb wartet,"))])


def parsed(envelope: Any) -> EmailMessage:
    mail = message_from_bytes(envelope.original_content or envelope.content,
                              policy=policy.default)
    assert isinstance(mail, EmailMessage)
    return mail


def open_pixel(mail: EmailMessage) -> str:
    html = mail.get_body(("html",))
    assert html is not None
    found = re.search(r'<img[^>]+src="([^"]+/o/[^"]+)"', html.get_content())
    assert found, f"no open pixel in {html.get_content()!r}"
    return found.group(1).replace("&amp;", "&")


def fetch(url: str) -> int:
    """GET ``url`` as a mail client loading images would."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        reply.read()
        return int(reply.status)


async def apply_journey_file(suite: Suite, key: str) -> str:
    """`python -m cjo_orchestration.journeyfile apply --publish`, as an operator would run it;
    returns the journey's name."""
    env = {**os.environ, "CJO_API_KEY": key,
           "CJO_ORCHESTRATION_TARGET": suite.target("orchestration")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cjo_orchestration.journeyfile", "apply", str(JOURNEY_FILE),
        "--publish", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
    assert proc.returncode == 0, output
    name, state, *_ = output.split()
    assert state == "JOURNEY_STATE_ACTIVE", output
    return name


def test_the_example_file_is_the_journey_this_test_runs() -> None:
    """The shape the e2e test relies on; a change to the example must be a change here."""
    journey = journeyfile.load(JOURNEY_FILE)
    assert not journeyfile.problems(journey)
    nodes = {n.id: n for n in journey.nodes}
    assert journey.event_trigger.event_name == "cart_updated"
    assert [c.event_name for c in journey.exit_criteria] == ["order_completed"]
    assert (journey.goal.event_name, journey.goal.window.ToTimedelta()) == (
        "order_completed", timedelta(days=3))
    assert nodes["wait_for_order"].wait.event.timeout.ToTimedelta() == timedelta(hours=1)
    assert nodes["big_cart"].branch.conditions[0].condition == "event.cart_value > 50"
    assert nodes["email"].send.content_key == "cart"
    assert nodes["wait_for_open"].wait.event.event_name == "email_opened"
    assert nodes["wait_for_open"].wait.event.timeout.ToTimedelta() == timedelta(days=1)
    assert list(nodes["nudge"].send.channel_preference) == [
        common_pb2.CHANNEL_PUSH, common_pb2.CHANNEL_EMAIL]


async def test_cart_abandonment_through_five_services(backend: Backend, tmp_path: Path) -> None:
    def fcm(request: Request) -> Answer:
        return Answer(200, {"name": f"projects/shop/messages/{len(request.body)}"})

    tracking_port = free_port()
    env = {**FAST, "CJO_DELIVERY_TRACKING_PORT": str(tracking_port),
           "CJO_DELIVERY_TRACKING_URL": f"http://127.0.0.1:{tracking_port}",
           "CJO_DELIVERY_TRACKING_SECRET": "t" * 32}
    with http_sink(HttpSink(default=fcm)) as push_server:
        async with running_suite(backend, tmp_path, extra_env=env, clock_start=T0) as suite:
            channels = {name: grpc.aio.insecure_channel(suite.target(name))
                        for name in SERVICES}
            try:
                await run_journey(suite, channels, push_server)
            finally:
                for channel in channels.values():
                    await channel.close()


async def run_journey(suite: Suite, channels: dict[str, grpc.aio.Channel],
                      push_server: HttpSink) -> None:
    key = (await ws_grpc.WorkspaceServiceStub(channels["identity"]).CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="shop", display_name="Shop"),
        metadata=bearer(SERVICE_TOKEN))).api_key.secret
    auth = bearer(key)

    content = content_service_pb2_grpc.ContentServiceStub(channels["content"])
    for item in (cart_content(), nudge_content()):
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=item, request_id=f"create-{item.key}"), metadata=auth)
        await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name=f"contentItems/{item.key}", request_id=f"publish-{item.key}"), metadata=auth)

    delivery = delivery_service_pb2_grpc.DeliveryServiceStub(channels["delivery"])
    await delivery.CreateProvider(delivery_service_pb2.CreateProviderRequest(
        provider=provider_pb2.Provider(
            channel=common_pb2.CHANNEL_PUSH, kind=provider_pb2.PROVIDER_KIND_FCM_PUSH,
            config={"project_id": "shop", "base_url": push_server.url},
            secrets={"access_token": "ya29.shop-token"})), metadata=auth)

    journey = await apply_journey_file(suite, key)

    identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
    # An order is also a workspace conversion: identity reports it to analytics as well as the
    # journey's goal does; attribution must count each order once (checked in step 7).
    await identity.UpdateIdentitySettings(identity_service_pb2.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(conversion_events=[
            identity_settings_pb2.ConversionEvent(event_name="order_completed",
                                                  revenue_property="revenue", currency="EUR")])),
        metadata=auth)
    orchestration = orch_grpc.OrchestrationServiceStub(channels["orchestration"])

    async def ingest(message_id: str, user: str, name: str, **properties: Any) -> None:
        reply = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
            event_pb2.Event(
                message_id=message_id, type=event_pb2.EVENT_TYPE_TRACK, name=name,
                identifiers=[event_pb2.Identifier(type="user_id", value=user)],
                traits=dict_to_struct(PEOPLE[user]["traits"]),
                properties=dict_to_struct(properties), source="web")]), metadata=auth)
        assert reply.results[0].status.code == 0, reply.results[0].status

    async def profile_id(user: str) -> str:
        reply = await identity.LookupProfile(identity_service_pb2.LookupProfileRequest(
            identifier=event_pb2.Identifier(type="user_id", value=user)), metadata=auth)
        return str(reply.profile.profile_id)

    async def enrollments() -> dict[str, enrollment_pb2.Enrollment]:
        reply = await orchestration.ListEnrollments(
            orchestration_service_pb2.ListEnrollmentsRequest(parent=journey, page_size=100),
            metadata=auth)
        by_profile = {e.profile_id: e for e in reply.enrollments}
        return {user: by_profile[pid] for user, pid in ids.items() if pid in by_profile}

    async def settled(check: Any, timeout: float = 20) -> dict[str, enrollment_pb2.Enrollment]:
        async def ok() -> dict[str, enrollment_pb2.Enrollment] | None:
            found = await enrollments()
            return found if len(found) == len(ids) and check(found) else None
        try:
            return await eventually(ok, timeout=timeout)  # type: ignore[return-value]
        except AssertionError:
            found = await enrollments()
            raise AssertionError("enrollments did not settle:\n" + "\n".join(
                f"{u}: state={e.state} node={e.current_node_id} reason={e.exit_reason} "
                f"steps={[(s.node_id, s.outcome, s.detail) for s in e.steps]}"
                for u, e in found.items()) + "\n" + suite.log("orchestration")[-3000:]) from None

    async def advance_once_sends_recorded(delta: timedelta) -> datetime:
        """Move the clock once delivery recorded every message it took (none QUEUED or
        SENDING). A provider call or record still under way when the clock jumps past its
        lease (5 minutes) is due again: another round sends it a second time (a push answered
        1.5 s late was sent twice)."""
        journey_id = journey.rsplit("/", 1)[-1]

        async def recorded() -> bool:
            listed = await delivery.ListMessages(delivery_service_pb2.ListMessagesRequest(
                journey_id=journey_id, page_size=1000), metadata=auth)
            return not any(m.status in (message_pb2.MESSAGE_STATUS_QUEUED,
                                        message_pb2.MESSAGE_STATUS_SENDING)
                           for m in listed.messages)

        await eventually(recorded, timeout=STATE_TIMEOUT)
        return suite.advance(delta)

    def parked_at(e: enrollment_pb2.Enrollment, node_id: str) -> bool:
        return bool(e.steps) and e.steps[-1].node_id == node_id and e.steps[-1].outcome == WAITING

    # 1. Four carts at T0.
    for user, person in PEOPLE.items():
        await ingest(f"cart-{user}", user, "cart_updated", cart_value=person["cart"])
    ids = {user: await profile_id(user) for user in PEOPLE}
    await settled(lambda f: all(parked_at(e, "wait_for_order") for e in f.values()))

    # 2. Dan buys ten minutes later: the exit criterion ends his journey, and the goal counts.
    dan_bought = suite.advance(timedelta(minutes=10))
    await ingest("order-dan", "dan", "order_completed", revenue=90)
    found = await settled(lambda f: f["dan"].state == EXITED)
    assert found["dan"].exit_reason == "exit_criteria"

    # 3. The hour is up: cy's small cart ends the journey; ada and bob wait for 09:00 Berlin.
    suite.advance(timedelta(minutes=55))
    found = await settled(lambda f: f["cy"].state == COMPLETED
                          and all(parked_at(f[u], "morning") for u in ("ada", "bob")))
    morning = T0 + timedelta(hours=2)  # 09:00 in Berlin (UTC+1 in March)
    assert {found[u].due_time.ToDatetime(UTC) for u in ("ada", "bob")} == {morning}
    suite.advance(morning - suite.now() + timedelta(seconds=1))

    # 4. The localized emails arrive at the SMTP server.
    await eventually(lambda: len(suite.mail.envelopes) >= 2, timeout=STATE_TIMEOUT)
    mails = {tuple(e.rcpt_tos): parsed(e) for e in suite.mail.envelopes}
    assert set(mails) == {("ada@example.com",), ("bob@example.com",)}
    assert mails[("ada@example.com",)]["subject"] == "Dein Warenkorb wartet, Ada"
    assert mails[("bob@example.com",)]["subject"] == "Your cart is waiting, Bob"
    await settled(lambda f: all(parked_at(f[u], "wait_for_open") for u in ("ada", "bob")))

    # 5. Bob's mail client loads the open pixel: delivery -> identity -> orchestration.
    assert await asyncio.to_thread(fetch, open_pixel(mails[("bob@example.com",)])) == 200
    found = await settled(lambda f: f["bob"].state == COMPLETED)
    assert [s.detail for s in found["bob"].steps if s.node_id == "wait_for_open"][-1] == (
        "event email_opened")

    # 6. A day without opening: ada gets the push, in German, at her device token.
    await advance_once_sends_recorded(timedelta(days=1))
    await eventually(lambda: push_server.count() >= 1, timeout=STATE_TIMEOUT)
    found = await settled(lambda f: f["ada"].state == COMPLETED)
    push = push_server.requests[0]
    assert push.path == "/v1/projects/shop/messages:send"
    assert push.headers["authorization"] == "Bearer ya29.shop-token"
    body = push.json()["message"]
    assert body["token"] == "ada-phone-token"
    assert body["notification"] == {"title": "Noch unentschlossen, Ada?",
                                    "body": "Dein Warenkorb über 80 wartet."}

    # 7. Ada buys on day 2, after her journey ended: within 3 days, so the goal counts.
    await advance_once_sends_recorded(timedelta(hours=20))
    bought = suite.now()
    await ingest("order-ada", "ada", "order_completed", revenue=80)
    found = await settled(lambda f: f["ada"].HasField("goal_time"))
    assert abs(found["ada"].goal_time.ToDatetime(UTC) - bought) < timedelta(seconds=5)
    assert abs(found["dan"].goal_time.ToDatetime(UTC) - dan_bought) < timedelta(seconds=5)
    assert not found["bob"].HasField("goal_time") and not found["cy"].HasField("goal_time")
    single = await orchestration.GetEnrollment(orchestration_service_pb2.GetEnrollmentRequest(
        name=found["ada"].name), metadata=auth)
    assert single.enrollment.goal_time == found["ada"].goal_time

    analytics = analytics_grpc.AnalyticsServiceStub(channels["analytics"])

    window = reports_pb2.TimeWindow()
    window.start_time.FromDatetime(T0 - timedelta(days=1))
    window.end_time.FromDatetime(T0 + timedelta(days=4))
    daily = reports_pb2.GetJourneyFunnelRequest(
        journey=journey, granularity=reports_pb2.GRANULARITY_DAY, window=window)

    async def funnel() -> Any:
        reply = await analytics.GetJourneyFunnel(daily, metadata=auth)
        versions = list(reply.versions)
        ok = (len(versions) == 1 and versions[0].entered_profiles == 4
              and versions[0].converted_profiles == 2)
        return versions[0] if ok else None

    try:
        counted = await eventually(funnel, timeout=STATE_TIMEOUT)
    except AssertionError:
        reply = await analytics.GetJourneyFunnel(daily, metadata=auth)
        raise AssertionError(f"funnel: {reply}") from None
    # Counted on the days the two bought, on the services' (test) clock.
    assert {b.start_time.ToDatetime(UTC).date(): b.conversions
            for b in counted.series if b.conversions} == {
        dan_bought.date(): 1, bought.date(): 1}
    # Each order is the journey's goal AND a workspace conversion: listed once, revenue once.
    attribution_request = reports_pb2.GetAttributionRequest(
        window=window, models=[reports_pb2.ATTRIBUTION_MODEL_LAST_TOUCH],
        include_conversions=True)

    async def both_facts_arrived() -> Any:
        reply = await analytics.GetJourneyReport(analytics_pb2.GetJourneyReportRequest(
            journey=journey), metadata=auth)
        goals = [c.count for c in reply.report.counts
                 if c.type == fact_pb2.FACT_TYPE_GOAL_REACHED]
        attribution = await analytics.GetAttribution(attribution_request, metadata=auth)
        converted = {c.fact_id for c in attribution.models[0].conversions
                     if c.fact_id.startswith("identity.conversion:")}
        return attribution if goals == [2] and len(converted) == 2 else None

    attribution = await eventually(both_facts_arrived, timeout=STATE_TIMEOUT)
    assert attribution.conversions == 2
    assert sorted(c.revenue for c in attribution.models[0].conversions) == [80.0, 90.0]

    # 8. Nothing twice. Move past every timer, then wait until nothing can send any more: every
    # enrollment has ended and delivery holds no message that is not final. Only then count.
    await advance_once_sends_recorded(timedelta(days=2))
    pending = {message_pb2.MESSAGE_STATUS_QUEUED, message_pb2.MESSAGE_STATUS_SENDING,
               message_pb2.MESSAGE_STATUS_DEFERRED}

    async def quiet() -> list[Any] | None:
        if any(e.state == enrollment_pb2.ENROLLMENT_STATE_ACTIVE
               for e in (await enrollments()).values()):
            return None
        listed = await delivery.ListMessages(delivery_service_pb2.ListMessagesRequest(
            journey_id=journey.rsplit("/", 1)[-1], page_size=1000), metadata=auth)
        return None if any(m.status in pending for m in listed.messages) else list(
            listed.messages)

    final_messages = await eventually(quiet, timeout=STATE_TIMEOUT)
    assert len(final_messages) == 3  # type: ignore[arg-type]  # two emails and one push
    assert Counter(tuple(e.rcpt_tos) for e in suite.mail.envelopes) == {
        ("ada@example.com",): 1, ("bob@example.com",): 1}
    assert [r.json()["message"]["token"] for r in push_server.requests] == ["ada-phone-token"]
    final = await enrollments()
    assert {u: e.state for u, e in final.items()} == {
        "ada": COMPLETED, "bob": COMPLETED, "cy": COMPLETED, "dan": EXITED}
