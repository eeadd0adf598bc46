"""The render request carries the profile view a step walked on. When that view is the one made
of identity's answer, unchanged, the request copies identity's traits and computed traits as
they came (``profiles.fill_view_struct``) instead of building every value again from the view's
dict: the same context either way, for about half the CPU."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import struct_pb2
from orchestration_support import (
    FakeContent,
    Ids,
    ProfileBook,
    fake_server,
    migrated_database,
    transactions_on,
)

from cjo.common.v1 import common_pb2
from cjo.common.v1.common_pb2 import RenderedMessage
from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2_grpc as content_grpc
from cjo.identity.v1 import consent_pb2, profile_pb2
from cjo_orchestration.adapters.peers import LiveProfile, Peers, RenderItem, RenderOutcome
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    JourneyGraph,
    Node,
    SendAction,
)
from cjo_orchestration.domain.orders import SendResult, Sent
from cjo_orchestration.service_layer import enrollment, journeys
from cjo_orchestration.service_layer.enrollment import Entrant
from cjo_orchestration.service_layer.steps import StepRound, _unchanged_profile
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.profiles import fill_view_struct, view_from_proto
from support import Backend, free_port, settings_for

WS = "ws"


def identity_profile(profile_id: str = "ada") -> profile_pb2.Profile:
    """A profile as identity answers it, with traits named like the view's reserved keys (the
    view shadows them), nested and listed values, a null, numbers whole and not."""
    profile = profile_pb2.Profile(name=f"profiles/{profile_id}", profile_id=profile_id)
    profile.traits.update({
        "email": f"{profile_id}@example.com", "name": "Ada", "age": 36, "score": 0.5,
        "big": 2.0 ** 60, "vip": True, "nothing": None, "tags": ["a", "b"],
        "address": {"city": "London", "lines": ["1 Main St"]},
        "segments": ["mine"], "computed": "shadowed", "consent": {"email": "no"}})
    profile.computed_traits.update({"orders_30d": 3, "ltv": 120.5})
    profile.segments.extend(["segments/vip", "segments/new", "segments/vip"])
    profile.consents.add(channel=common_pb2.CHANNEL_EMAIL, topic="news",
                         state=consent_pb2.CONSENT_STATE_SUBSCRIBED)
    profile.consents.add(channel=common_pb2.CHANNEL_SMS,
                         state=consent_pb2.CONSENT_STATE_UNSUBSCRIBED)
    profile.identifiers.add(type="email", value=f"{profile_id}@example.com")
    profile.identifiers.add(type="user_id", value="u1")
    return profile


def built_from_dict(view: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(view)
    return struct


@pytest.mark.parametrize("computed", [True, False], ids=["computed", "no-computed"])
def test_the_view_copied_from_identitys_profile_is_the_view_built_from_its_dict(
        computed: bool) -> None:
    profile = identity_profile()
    if not computed:
        profile.ClearField("computed_traits")
    view = view_from_proto(profile)
    copied = struct_pb2.Struct()
    fill_view_struct(copied, profile, view)
    assert copied == built_from_dict(view)
    assert copied["segments"] == ["new", "vip"] and copied["computed"] == (
        {"orders_30d": 3, "ltv": 120.5} if computed else {})


@pytest.fixture
async def content(sqlite_backend: Backend) -> AsyncIterator[tuple[Any, Peers]]:
    class Recording(FakeContent):
        contexts: list[Any] = []

        async def BatchRenderContent(self, request: Any, context: Any) -> Any:
            self.contexts.extend(render.context for render in request.requests)
            return await super().BatchRenderContent(request, context)

    fake = Recording()
    fake.items[(WS, "hi")] = content_item_pb2.ContentItem(
        key="hi", email=content_item_pb2.EmailTemplate(subject="Hi {{ profile.name }}",
                                                       html="<p>{{ profile.email }}</p>"))
    async with fake_server(fake, content_grpc.add_ContentServiceServicer_to_server,
                           free_port()) as target:
        settings = settings_for("orchestration", sqlite_backend, CJO_CONTENT_TARGET=target)
        yield fake, Peers(settings, timeout=10.0)


async def test_a_render_from_identitys_profile_sends_the_same_context_as_from_the_view(
        content: tuple[Any, Peers]) -> None:
    fake, peers = content
    profile = identity_profile()
    view = view_from_proto(profile)
    rendered = await peers.render(WS, [
        RenderItem("ada", "hi", Channel.EMAIL, view, {"sku": "x"}),
        RenderItem("ada", "hi", Channel.EMAIL, view, {"sku": "x"}, profile=profile)])
    assert all(isinstance(r, RenderedMessage) for r in rendered)
    from_dict, copied = fake.contexts
    assert copied == from_dict
    assert copied.traits == built_from_dict(view)
    assert rendered[0] == rendered[1]


# --- the step round hands identity's profile to the render while the view is unchanged ---


class Peers_(ProfileBook):
    """Identity answering each profile with the message its view was made of; content renders
    everything; delivery accepts everything."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[RenderItem] = []
        self.messages: dict[str, profile_pb2.Profile] = {}

    def hold(self, profile: profile_pb2.Profile) -> None:
        self.messages[profile.profile_id] = profile
        self.people[profile.profile_id] = view_from_proto(profile)

    async def profiles(self, workspace_id: str, profile_ids: Sequence[str]) -> list[Any]:
        return [LiveProfile(a.profile_id, a.view, a.merged_from, self.messages[a.profile_id])
                if isinstance(a, LiveProfile) else a
                for a in await super().profiles(workspace_id, profile_ids)]

    async def render(self, workspace_id: str,
                     items: Sequence[RenderItem]) -> list[RenderOutcome]:
        self.rendered.extend(items)
        return [RenderedMessage(content_key=item.content_key) for item in items]

    async def send(self, workspace_id: str, items: Sequence[Any]) -> list[SendResult]:
        return [Sent(f"m-{item.idempotency_key}") for item in items]


@pytest.fixture
def tx(sqlite_backend: Backend) -> Iterator[Transactions]:
    db = migrated_database(sqlite_backend)
    try:
        yield transactions_on(db, ManualClock(datetime(2026, 6, 1, 9, tzinfo=UTC)))
    finally:
        db.dispose()


async def test_the_step_round_renders_from_identitys_profile_it_walked_on(
        tx: Transactions) -> None:
    graph = JourneyGraph(trigger=EventTrigger("signed_up"), entry_node_id="mail",
                         nodes=(Node("mail", SendAction("hi", Channel.EMAIL, "done")),
                                Node("done", ExitAction())))
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "j1", graph))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    ids = Ids()
    for profile_id in ("ada", "bob"):
        tx.run_sync(lambda uow, p=profile_id: enrollment.enroll_profile(
            uow, WS, "j1", Entrant(p, {}, {}), f"r-{p}", "", ids))
    peers = Peers_()
    for profile_id in ("ada", "bob"):
        peers.hold(identity_profile(profile_id))
    await StepRound(tx, peers, load_engine_settings(Env({}))).run()
    by_profile = {item.profile_id: item for item in peers.rendered}
    assert by_profile.keys() == {"ada", "bob"}
    for profile_id, item in by_profile.items():
        assert item.profile is peers.messages[profile_id]
        assert item.traits == view_from_proto(peers.messages[profile_id])



def test_only_the_very_view_identity_answered_renders_from_its_message() -> None:
    """A view the walk changed (an update, a merge, the event round: each builds a new mapping)
    is rendered from the view, even when equal to identity's: only the object identity read
    goes with identity's message (a stale message would lose what the walk changed)."""
    message = identity_profile("ada")
    view = view_from_proto(message)
    read = {id(view): LiveProfile("ada", view, (), message)}
    assert _unchanged_profile(read, view) is message
    assert _unchanged_profile(read, {**view}) is None
    assert _unchanged_profile(read, {**view, "plan": "gold"}) is None
    assert _unchanged_profile(None, view) is None
