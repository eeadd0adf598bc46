"""The learning loop through the six services as separate processes, on one test clock.

Workspace ``acme`` has two offers (actions ``spring`` and ``loyalty``, each an email content
item), a decision point ``welcome_offer`` ranking them (reward: a ``purchase`` event with
``amount > 0`` within 1 hour of the email) and a journey "on ``signed_up``, decide and send the
offer, exit". Two people sign up:

- each gets the email of the action decisioning chose, and delivery's message carries the
  decision id; once the email is sent the decision is EXPOSED;
- Ada buys (through identity, as any backend would send it): her decision is REWARDED;
- Bob does not: when his hour lapses his decision is NOT_REWARDED; the windows closed, the
  report counts the reward and the model learned: deciding for Ada again gives the rewarded
  action a higher propensity than the prior it was chosen with.

Workspace ``globex`` runs the same set-up with the same keys and the same user ids in the same
processes; acme's purchase rewards nothing of globex's, and neither sees the other's decisions.

On PostgreSQL decisioning runs as two replicas behind a balancer, as production runs it: the
replicas share the decisions and the models through the database, and both serve.
"""

from __future__ import annotations

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
from cjo.decisioning.v1 import action_pb2, decision_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as dec_pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dec_grpc
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as delivery_grpc
from cjo.delivery.v1 import message_pb2
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import journey_pb2, orchestration_service_pb2
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc.status import error_reason
from suite import SERVICES, Suite, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FAST = {"CJO_ORCHESTRATION_POLL_SECONDS": "0.1", "CJO_DELIVERY_POLL_SECONDS": "0.1"}
EMAIL = common_pb2.CHANNEL_EMAIL
SENT = message_pb2.MESSAGE_STATUS_SENT
EXPOSED = decision_pb2.DECISION_OUTCOME_EXPOSED
REWARDED = decision_pb2.DECISION_OUTCOME_REWARDED
NOT_REWARDED = decision_pb2.DECISION_OUTCOME_NOT_REWARDED
WINDOW = timedelta(hours=1)
GRACE = timedelta(seconds=300)  # CJO_DECISIONING_REWARD_GRACE_SECONDS' default
PRIOR = 0.05  # the point's prior propensity
# Each offer's email subject: the mail names the action that was chosen.
OFFERS = {"spring": "Spring sale", "loyalty": "Loyalty bonus"}


class Shop:
    """One workspace's API, with its key, and its people by user id."""

    def __init__(self, suite: Suite, channels: dict[str, grpc.aio.Channel], key: str,
                 sender_tag: str) -> None:
        self.suite = suite
        self.auth = bearer(key)
        self.tag = sender_tag
        self.identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
        self.content = content_service_pb2_grpc.ContentServiceStub(channels["content"])
        self.decisioning = dec_grpc.DecisioningServiceStub(channels["decisioning"])
        self.delivery = delivery_grpc.DeliveryServiceStub(channels["delivery"])
        self.orchestration = orch_grpc.OrchestrationServiceStub(channels["orchestration"])
        self.journey = ""
        self.profiles: dict[str, str] = {}

    async def set_up(self) -> None:
        for action, subject in OFFERS.items():
            item = content_item_pb2.ContentItem(key=f"{action}-email", email=(
                content_item_pb2.EmailTemplate(
                    subject=f"{subject} for {{{{ profile.first_name }}}} ({self.tag})",
                    html=f"<p>{subject}</p>", text=subject)))
            await self.content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
                content_item=item, request_id=f"create-{action}"), metadata=self.auth)
            await self.content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
                name=f"contentItems/{action}-email", request_id=f"publish-{action}"),
                metadata=self.auth)
            await self.decisioning.CreateAction(dec_pb.CreateActionRequest(
                action=action_pb2.Action(
                    key=action, display_name=subject, value=1.0,
                    contents=[action_pb2.ActionContent(channel=EMAIL,
                                                       content_key=f"{action}-email")]),
                request_id=f"action-{action}"), metadata=self.auth)
        await self.decisioning.CreateDecisionPoint(dec_pb.CreateDecisionPointRequest(
            decision_point=decision_point_pb2.DecisionPoint(
                key="welcome_offer", display_name="Welcome offer", actions=list(OFFERS),
                max_actions=len(OFFERS),  # both ranked: the test reads each one's propensity
                model=decision_point_pb2.Model(prior_propensity=PRIOR),
                reward=decision_point_pb2.Reward(
                    event_name="purchase", filter="event.properties.amount > 0",
                    window=duration_pb2.Duration(seconds=int(WINDOW.total_seconds())))),
            request_id="point"), metadata=self.auth)
        created = await self.orchestration.CreateJourney(
            orchestration_service_pb2.CreateJourneyRequest(journey=journey_pb2.Journey(
                display_name="Welcome offer", entry_node_id="offer",
                event_trigger=journey_pb2.EventTrigger(event_name="signed_up"),
                nodes=[
                    journey_pb2.Node(id="offer", decide=journey_pb2.DecideNode(
                        decision_point="welcome_offer", channel=EMAIL, next_node_id="done")),
                    journey_pb2.Node(id="done", exit=journey_pb2.ExitNode()),
                ])), metadata=self.auth)
        published = await self.orchestration.PublishJourney(
            orchestration_service_pb2.PublishJourneyRequest(name=created.journey.name),
            metadata=self.auth)
        self.journey = published.journey.name

    def email(self, user: str) -> str:
        return f"{user}@{self.tag}.example"

    async def track(self, message_id: str, name: str, user: str,
                    traits: dict[str, Any] | None = None, **properties: Any) -> str:
        reply = await self.identity.IngestEvents(identity_service_pb2.IngestEventsRequest(
            events=[event_pb2.Event(
                message_id=message_id, type=event_pb2.EVENT_TYPE_TRACK, name=name,
                identifiers=[event_pb2.Identifier(type="user_id", value=user)],
                traits=dict_to_struct(traits or {}), properties=dict_to_struct(properties),
                source="web")]), metadata=self.auth)
        (result,) = reply.results
        assert result.status.code == 0, result.status
        self.profiles[user] = result.profile_id
        return str(result.profile_id)

    async def sign_up(self, user: str, first_name: str) -> None:
        await self.track(f"signup-{user}", "signed_up", user,
                         {"email": self.email(user), "first_name": first_name})

    async def sent_message(self, user: str) -> message_pb2.Message | None:
        reply = await self.delivery.ListMessages(delivery_pb.ListMessagesRequest(
            profile_id=self.profiles[user], status=SENT), metadata=self.auth)
        return reply.messages[0] if reply.messages else None

    async def decision(self, decision_id: str) -> decision_pb2.Decision:
        return (await self.decisioning.GetDecision(dec_pb.GetDecisionRequest(
            name=f"decisions/{decision_id}"), metadata=self.auth)).decision

    async def outcome(self, decision_id: str, wanted: int) -> decision_pb2.Decision | None:
        decision = await self.decision(decision_id)
        return decision if decision.outcome == wanted else None

    async def report(self) -> dict[str, dec_pb.ActionReport]:
        reply = await self.decisioning.GetDecisionReport(dec_pb.GetDecisionReportRequest(
            decision_point="decisionPoints/welcome_offer"), metadata=self.auth)
        return {a.action: a for a in reply.actions}


def mail_to(suite: Suite, address: str) -> list[Any]:
    found = []
    for envelope in suite.mail.envelopes:
        if address in envelope.rcpt_tos:
            found.append(message_from_bytes(envelope.original_content or envelope.content,
                                            policy=policy.default))
    return found


async def create_workspace(channel: grpc.aio.Channel, workspace_id: str) -> str:
    reply = await ws_grpc.WorkspaceServiceStub(channel).CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id=workspace_id, display_name=workspace_id),
        metadata=bearer(SERVICE_TOKEN))
    return str(reply.api_key.secret)


async def test_decisions_learn_from_exposures_and_purchases(backend: Backend,
                                                            tmp_path: Path) -> None:
    replicas = {"decisioning": 2} if backend.kind == "postgresql" else None
    async with running_suite(backend, tmp_path, extra_env=FAST, clock_start=T0,
                             replicas=replicas) as suite:
        channels = {name: grpc.aio.insecure_channel(suite.target(name)) for name in SERVICES}
        acme = Shop(suite, channels, await create_workspace(channels["identity"], "acme"),
                    "acme")
        globex = Shop(suite, channels, await create_workspace(channels["identity"], "globex"),
                      "globex")
        for shop in (acme, globex):
            await shop.set_up()
        for shop in (acme, globex):
            await shop.sign_up("ada", "Ada")
        await acme.sign_up("bob", "Bob")

        # Each person gets the chosen action's email; the message names the decision.
        decisions: dict[tuple[str, str], decision_pb2.Decision] = {}
        for shop, user in ((acme, "ada"), (acme, "bob"), (globex, "ada")):
            message = await eventually(lambda s=shop, u=user: s.sent_message(u), timeout=60)
            assert isinstance(message, message_pb2.Message)
            assert message.decision_id, message
            decision = await shop.decision(message.decision_id)
            chosen = decision.actions[0].action
            assert decision.decision_point == "welcome_offer"
            assert decision.profile_id == shop.profiles[user]
            (mail,) = await eventually(lambda s=shop, u=user: mail_to(suite, s.email(u)),
                                       timeout=30)
            first_name = "Ada" if user == "ada" else "Bob"
            assert mail["subject"] == f"{OFFERS[chosen]} for {first_name} ({shop.tag})"
            decisions[(shop.tag, user)] = decision

        # Sent: exposed (delivery told decisioning, through its outbox).
        for (tag, _user), decision in decisions.items():
            shop = acme if tag == "acme" else globex
            exposed = await eventually(lambda s=shop, d=decision: s.outcome(d.decision_id,
                                                                            EXPOSED),
                                       timeout=60)
            assert isinstance(exposed, decision_pb2.Decision)
            assert exposed.expose_time.seconds > 0

        # Ada buys at acme, inside the window: her decision is rewarded, and only hers.
        ada = decisions[("acme", "ada")]
        await acme.track("order-1", "purchase", "ada", amount=42.0)
        await acme.track("order-0", "purchase", "bob", amount=0)  # the filter refuses it
        try:
            rewarded = await eventually(lambda: acme.outcome(ada.decision_id, REWARDED),
                                        timeout=60)
        except AssertionError:
            raise AssertionError(
                f"not rewarded: {await acme.decision(ada.decision_id)}\n"
                + "\n".join(suite.log(n)[-2000:] for n in suite.replicas("decisioning"))
            ) from None
        assert isinstance(rewarded, decision_pb2.Decision)
        assert rewarded.reward_time.seconds >= rewarded.expose_time.seconds
        assert (await acme.decision(decisions[("acme", "bob")].decision_id)).outcome == EXPOSED
        assert (await globex.decision(decisions[("globex", "ada")].decision_id)).outcome == \
            EXPOSED

        # The report holds the chosen action's exposure as pending: its window is open, and a
        # reward counts only once the window closes (failures are known only then)...
        won = ada.actions[0].action
        report = await eventually(lambda: _pending_in(acme, won), timeout=60)
        assert isinstance(report, dict)
        assert report[won].exposures >= 1 and report[won].rewards == 0

        # Bob's hour lapses without a (matching) purchase: a failure. (A window is final a grace
        # after it closed, for rewards forwarded late.)
        suite.advance(WINDOW + GRACE + timedelta(minutes=5))
        bob = decisions[("acme", "bob")]
        await eventually(lambda: acme.outcome(bob.decision_id, NOT_REWARDED), timeout=60)
        assert (await acme.decision(ada.decision_id)).outcome == REWARDED
        # The windows closed: the report counts Ada's reward on the chosen action.
        report = await eventually(lambda: _rewarded_in(acme, won), timeout=60)
        assert isinstance(report, dict)
        assert report[won].posterior_mean > 1 / 3 and report[won].pending == 0

        # ... and the model learned it (outcomes are learned once their window is final, rewards
        # and failures together, as the model's update needs): deciding for Ada again, the
        # action she bought from has a higher propensity than the prior it was chosen with.
        async def learned() -> float | None:
            again = (await acme.decisioning.Decide(dec_pb.DecideRequest(
                decision_point="decisionPoints/welcome_offer", profile_id=acme.profiles["ada"],
                context=decision_pb2.DecisionContext(channel=EMAIL)),
                metadata=acme.auth)).decision
            ranked = {a.action: a.propensity for a in again.actions}
            return ranked[won] if ranked[won] > ada.actions[0].propensity + 1e-6 else None

        # Each look is a new decision: look twice a second, not twenty times.
        await eventually(learned, timeout=60, interval=0.5)
        assert abs(ada.actions[0].propensity - PRIOR) < 0.02  # chosen while the model knew nothing

        # The other workspace noticed nothing: its Ada's decision lapsed unrewarded, its report
        # holds its own decision only, and acme's decisions do not exist for it.
        theirs = decisions[("globex", "ada")]
        await eventually(lambda: globex.outcome(theirs.decision_id, NOT_REWARDED), timeout=60)
        globex_report = await globex.report()
        assert sum(a.decisions for a in globex_report.values()) == 1
        assert sum(a.rewards for a in globex_report.values()) == 0
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await globex.decision(ada.decision_id)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(rpc_status.from_call(hidden.value)) == "DECISION_NOT_FOUND"
        assert len(mail_to(suite, globex.email("ada"))) == 1
        assert len(mail_to(suite, acme.email("ada"))) == 1

        if replicas:
            balancer = suite.balancers["decisioning"]
            assert balancer.served(0) > 0 and balancer.served(1) > 0, balancer.calls
        for channel in channels.values():
            await channel.close()


async def _pending_in(shop: Shop, action: str) -> dict[str, dec_pb.ActionReport] | None:
    report = await shop.report()
    return report if action in report and report[action].pending >= 1 else None


async def _rewarded_in(shop: Shop, action: str) -> dict[str, dec_pb.ActionReport] | None:
    report = await shop.report()
    return report if action in report and report[action].rewards == 1 else None
