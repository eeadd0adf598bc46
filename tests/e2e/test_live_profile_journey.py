"""A journey acts on the person as they are when a step runs (issue 13), through the five
services as separate processes on one test clock.

Cart reminder: cart_updated -> wait 1 h -> email "cart" -> done. During the hour:

- an anonymous visitor (anonymous_id only, no address) logs in with a user id and an email:
  the mail goes to that email;
- another visitor logs in to an account that already exists with an email (identity merges
  the visitor into it): the mail goes to the account's email;
- a known customer changes their email: the mail goes to the new address;
- a visitor logs in with an email sent only as an identifier (no `email` trait): the mail goes
  to that email (the profile's identifiers).

`Enroll` with an id identity does not know (a backend's own id) is NOT_FOUND.

A second workspace in the same processes, with its own customer under the same user id, gets
its own mail at its own address and nothing else.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_status import rpc_status

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2, orchestration_service_pb2
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc.status import error_reason
from suite import SERVICES, STATE_TIMEOUT, Suite, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WAITING = enrollment_pb2.STEP_OUTCOME_WAITING
COMPLETED = enrollment_pb2.ENROLLMENT_STATE_COMPLETED
FAST = {"CJO_ORCHESTRATION_POLL_SECONDS": "0.1", "CJO_DELIVERY_POLL_SECONDS": "0.1"}


def reminder() -> journey_pb2.Journey:
    return journey_pb2.Journey(
        display_name="Cart reminder", entry_node_id="wait",
        event_trigger=journey_pb2.EventTrigger(event_name="cart_updated"),
        nodes=[
            journey_pb2.Node(id="wait", wait=journey_pb2.WaitNode(
                duration=duration_pb2.Duration(seconds=3600), next_node_id="mail")),
            journey_pb2.Node(id="mail", send=journey_pb2.SendNode(
                content_key="cart", channel=common_pb2.CHANNEL_EMAIL, next_node_id="done")),
            journey_pb2.Node(id="done", exit=journey_pb2.ExitNode()),
        ])


class Shop:
    """One workspace's API, with its key."""

    def __init__(self, channels: dict[str, grpc.aio.Channel], key: str) -> None:
        self.auth = bearer(key)
        self.identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
        self.content = content_service_pb2_grpc.ContentServiceStub(channels["content"])
        self.orchestration = orch_grpc.OrchestrationServiceStub(channels["orchestration"])
        self.journey = ""

    async def setup(self, greeting: str) -> None:
        item = content_item_pb2.ContentItem(key="cart", email=content_item_pb2.EmailTemplate(
            subject=greeting + " {{ profile.first_name }}", html="<p>Your cart</p>",
            text="Your cart"))
        await self.content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=item, request_id="create-cart"), metadata=self.auth)
        await self.content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name="contentItems/cart", request_id="publish-cart"), metadata=self.auth)
        created = await self.orchestration.CreateJourney(
            orchestration_service_pb2.CreateJourneyRequest(journey=reminder()),
            metadata=self.auth)
        published = await self.orchestration.PublishJourney(
            orchestration_service_pb2.PublishJourneyRequest(name=created.journey.name),
            metadata=self.auth)
        self.journey = published.journey.name

    async def ingest(self, message_id: str, name: str, identifiers: dict[str, str],
                     traits: dict[str, Any] | None = None, **properties: Any) -> str:
        kind = (event_pb2.EVENT_TYPE_IDENTIFY if name == "identify"
                else event_pb2.EVENT_TYPE_TRACK)
        reply = await self.identity.IngestEvents(identity_service_pb2.IngestEventsRequest(
            events=[event_pb2.Event(
                message_id=message_id, type=kind, name="" if name == "identify" else name,
                identifiers=[event_pb2.Identifier(type=t, value=v)
                             for t, v in identifiers.items()],
                traits=dict_to_struct(traits or {}), properties=dict_to_struct(properties),
                source="web")]), metadata=self.auth)
        (result,) = reply.results
        assert result.status.code == 0, result.status
        return str(result.profile_id)

    async def enrollments(self) -> list[enrollment_pb2.Enrollment]:
        reply = await self.orchestration.ListEnrollments(
            orchestration_service_pb2.ListEnrollmentsRequest(parent=self.journey,
                                                             page_size=100),
            metadata=self.auth)
        return list(reply.enrollments)


def waiting(enrollments: list[enrollment_pb2.Enrollment], count: int) -> bool:
    return len(enrollments) == count and all(
        e.steps and e.steps[-1].node_id == "wait" and e.steps[-1].outcome == WAITING
        for e in enrollments)


def describe(enrollments: list[enrollment_pb2.Enrollment]) -> str:
    return "\n".join(f"{e.profile_id}: state={e.state} reason={e.exit_reason} "
                     f"steps={[(s.node_id, s.outcome, s.detail) for s in e.steps]}"
                     for e in enrollments)


async def test_mail_goes_to_the_address_the_person_has_when_the_step_runs(
        backend: Backend, tmp_path: Path) -> None:
    async with running_suite(backend, tmp_path, extra_env=FAST, clock_start=T0) as suite:
        channels = {name: grpc.aio.insecure_channel(suite.target(name)) for name in SERVICES}
        try:
            await run(suite, channels)
        finally:
            for channel in channels.values():
                await channel.close()


async def run(suite: Suite, channels: dict[str, grpc.aio.Channel]) -> None:
    workspaces = ws_grpc.WorkspaceServiceStub(channels["identity"])
    shops = {}
    for workspace_id in ("shop", "other"):
        key = (await workspaces.CreateWorkspace(ws_pb.CreateWorkspaceRequest(
            workspace_id=workspace_id, display_name=workspace_id),
            metadata=bearer(SERVICE_TOKEN))).api_key.secret
        shops[workspace_id] = Shop(channels, key)
    shop, other = shops["shop"], shops["other"]
    await shop.setup("Your cart,")
    await other.setup("Other cart,")

    # Known before anyone shops: carl's CRM account, and dora (in both workspaces).
    carl = await shop.ingest("crm-carl", "identify", {"user_id": "carl"},
                             {"email": "carl@crm.example", "first_name": "Carl"})
    await shop.ingest("crm-dora", "identify", {"user_id": "dora"},
                      {"email": "dora@old.example", "first_name": "Dora"})
    await other.ingest("crm-dora", "identify", {"user_id": "dora"},
                       {"email": "dora@other.example", "first_name": "Dora"})
    suite.advance(timedelta(minutes=1))  # the visitors are newer than the accounts

    # Three carts in the shop (two anonymous, without any address), one in the other workspace.
    await shop.ingest("cart-a", "cart_updated", {"anonymous_id": "anon-a"}, cart_value=80)
    visitor_b = await shop.ingest("cart-b", "cart_updated", {"anonymous_id": "anon-b"},
                                  cart_value=60)
    await shop.ingest("cart-dora", "cart_updated", {"user_id": "dora"}, cart_value=70)
    await shop.ingest("cart-e", "cart_updated", {"anonymous_id": "anon-e"}, cart_value=40)
    await other.ingest("cart-dora", "cart_updated", {"user_id": "dora"}, cart_value=70)

    async def parked() -> bool:
        return waiting(await shop.enrollments(), 4) and waiting(await other.enrollments(), 1)

    await eventually(parked, timeout=STATE_TIMEOUT)

    # During the hour: (a) the first visitor logs in to a new account with an email;
    # (b) the second logs in to carl's existing account (merged into it); (c) dora changes
    # her email in the shop.
    suite.advance(timedelta(minutes=20))
    await shop.ingest("login-a", "identify", {"anonymous_id": "anon-a", "user_id": "alice"},
                      {"email": "alice@new.example", "first_name": "Alice"})
    survivor = await shop.ingest("login-b", "identify",
                                 {"anonymous_id": "anon-b", "user_id": "carl"})
    assert survivor == carl != visitor_b
    await shop.ingest("email-dora", "identify", {"user_id": "dora"},
                      {"email": "dora@new.example"})
    # (d) A login that carries the email only as an identifier, with no trait at all.
    await shop.ingest("login-e", "identify", {"anonymous_id": "anon-e", "email": "eve@id.example"})

    # A backend's own id that identity never saw: Enroll refuses it before writing anything.
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await shop.orchestration.Enroll(orchestration_service_pb2.EnrollRequest(
            journey=shop.journey, profile_id="crm-row-4711", request_id="enroll-unknown"),
            metadata=shop.auth)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ingest an identify event" in (unknown.value.details() or "")
    assert error_reason(rpc_status.from_call(unknown.value)) == "PROFILE_NOT_FOUND"
    assert "crm-row-4711" not in {e.profile_id for e in await shop.enrollments()}

    async def moved() -> bool:
        # The merge reached orchestration: the visitor's enrollment now belongs to carl.
        return carl in {e.profile_id for e in await shop.enrollments()}

    await eventually(moved, timeout=STATE_TIMEOUT)
    suite.advance(timedelta(minutes=41))

    async def mailed() -> bool:
        return len(suite.mail.envelopes) >= 5

    try:
        await eventually(mailed, timeout=30)
    except AssertionError:
        raise AssertionError(
            f"mailed: {[e.rcpt_tos for e in suite.mail.envelopes]}\n"
            + describe(await shop.enrollments()) + "\n"
            + suite.log("orchestration")[-3000:]) from None

    async def done() -> bool:
        return all(e.state == COMPLETED
                   for e in [*await shop.enrollments(), *await other.enrollments()])

    await eventually(done, timeout=STATE_TIMEOUT)
    subjects = {tuple(e.rcpt_tos): message_from_bytes(
        e.original_content or e.content, policy=policy.default)["subject"]
        for e in suite.mail.envelopes}
    assert Counter(tuple(e.rcpt_tos) for e in suite.mail.envelopes) == {
        ("alice@new.example",): 1, ("carl@crm.example",): 1, ("dora@new.example",): 1,
        ("eve@id.example",): 1, ("dora@other.example",): 1}
    # Templates render against the same live profile: the names the person has now.
    assert subjects[("alice@new.example",)] == "Your cart, Alice"
    assert subjects[("carl@crm.example",)] == "Your cart, Carl"
    assert subjects[("dora@other.example",)] == "Other cart, Dora"
