"""A step acts on the person as identity holds them when the step runs, not as they were when
they entered: the step round reads every profile of its batch in one call (a fake identity
here, :class:`ProfileBook`), and an update_profile's traits are seen by the branch right after
it. Real SQLite (the use-cases and their store); the fake stands in for identity only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from orchestration_support import Ids, ProfileBook, migrated_database, transactions_on

from cjo.common.v1.common_pb2 import RenderedMessage
from cjo_orchestration.adapters.peers import RenderItem, RenderOutcome, SendItem
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState, Step
from cjo_orchestration.domain.journeys import (
    BranchAction,
    BranchCondition,
    Channel,
    EventTrigger,
    ExitAction,
    JourneyGraph,
    Node,
    SendAction,
    UpdateProfileAction,
)
from cjo_orchestration.domain.orders import ProfileOrder, SendResult, Sent
from cjo_orchestration.service_layer import enrollment, journeys
from cjo_orchestration.service_layer.enrollment import Entrant
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

WS = "ws"
SETTINGS = load_engine_settings(Env({}))
IDS = Ids()  # one sequence for the module: every test starts on an empty database
MAIL = JourneyGraph(trigger=EventTrigger("cart_updated"), entry_node_id="mail",
                    nodes=(Node("mail", SendAction("reminder", Channel.EMAIL, "done")),
                           Node("done", ExitAction())))


class Peers(ProfileBook):
    """Identity (the book), content (renders everything) and delivery (accepts everything)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[SendItem] = []
        self.rendered: list[RenderItem] = []
        self.updates: list[ProfileOrder] = []

    async def render(self, workspace_id: str,
                     items: Sequence[RenderItem]) -> list[RenderOutcome]:
        self.rendered.extend(items)
        return [RenderedMessage(content_key=item.content_key) for item in items]

    async def send(self, workspace_id: str, items: Sequence[SendItem]) -> list[SendResult]:
        self.sent.extend(items)
        return [Sent(f"m-{item.idempotency_key}") for item in items]

    async def update_profiles(self, workspace_id: str,
                              orders: Sequence[ProfileOrder]) -> list[SendResult]:
        # Identity accepts the identify event; its record changes only when the test says so,
        # so what a branch sees right after comes from the accepted update itself.
        self.updates.extend(orders)
        return [Sent(f"ev-{order.idempotency_key}") for order in orders]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 6, 1, 9, tzinfo=UTC))


@pytest.fixture
def tx(sqlite_backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    db = migrated_database(sqlite_backend)
    try:
        yield transactions_on(db, clock)
    finally:
        db.dispose()


def publish(tx: Transactions, graph: JourneyGraph, journey_id: str = "j1") -> None:
    tx.run_sync(lambda uow: journeys.create(uow, WS, journey_id, journey_id, graph))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, journey_id, set()))


def enroll(tx: Transactions, profile_id: str, traits: dict[str, Any],
           journey_id: str = "j1") -> None:
    tx.run_sync(lambda uow: enrollment.enroll_profile(
        uow, WS, journey_id, Entrant(profile_id, traits, {}), f"r-{profile_id}", "", IDS))


def enrollments(tx: Transactions, journey_id: str = "j1") -> dict[str, tuple[Enrollment,
                                                                              list[Step]]]:
    found, _ = tx.run_sync(lambda uow: enrollment.list_enrollments(
        uow, WS, journey_id, "", 100, None))
    return {e.profile_id: (e, steps) for e, steps in found}


async def test_a_send_goes_to_the_address_the_profile_has_now(tx: Transactions) -> None:
    publish(tx, MAIL)
    enroll(tx, "ada", {"email": "old@example.com", "name": "Ada"})
    peers = Peers()
    peers.set("ada", {"email": "new@example.com", "name": "Ada L."})  # changed since entry
    await StepRound(tx, peers, SETTINGS).run()
    [sent] = peers.sent
    assert sent.address == "new@example.com"
    # Templates render against the same view.
    [rendered] = peers.rendered
    assert rendered.traits["name"] == "Ada L."
    assert enrollments(tx)["ada"][0].state is EnrollmentState.COMPLETED


async def test_one_profile_read_per_workspace_group(tx: Transactions) -> None:
    publish(tx, MAIL)
    peers = Peers()
    for name in ("ada", "bob", "cy"):
        enroll(tx, name, {})
        peers.set(name, {"email": f"{name}@example.com"})
    await StepRound(tx, peers, SETTINGS).run()
    assert [sorted(call) for call in peers.calls] == [["ada", "bob", "cy"]]
    assert sorted(s.address for s in peers.sent) == [
        "ada@example.com", "bob@example.com", "cy@example.com"]


async def test_a_merged_away_visitor_is_mailed_at_the_survivors_address(
        tx: Transactions) -> None:
    publish(tx, MAIL)
    enroll(tx, "visitor", {"anonymous_id": "cookie-1"})  # no address when entering
    peers = Peers()
    peers.set("known", {"email": "known@example.com"})
    peers.merged["visitor"] = "known"  # logged in during the wait: merged into a CRM profile
    await StepRound(tx, peers, SETTINGS).run()
    assert [s.address for s in peers.sent] == ["known@example.com"]


async def test_a_branch_after_update_profile_sees_the_written_trait(tx: Transactions) -> None:
    publish(tx, JourneyGraph(
        trigger=EventTrigger("cart_updated"), entry_node_id="promote",
        nodes=(Node("promote", UpdateProfileAction({"vip": True}, "check")),
               Node("check", BranchAction((BranchCondition("profile.vip == true", "vip"),),
                                          "regular")),
               Node("vip", ExitAction()), Node("regular", ExitAction()))))
    enroll(tx, "ada", {"email": "ada@example.com"})
    peers = Peers()
    peers.set("ada", {"email": "ada@example.com", "vip": False})  # identity not yet re-read
    await StepRound(tx, peers, SETTINGS).run()
    assert [o.traits for o in peers.updates] == [{"vip": True}]
    done, steps = enrollments(tx)["ada"]
    assert done.state is EnrollmentState.COMPLETED
    assert [(s.node_id, s.detail) for s in steps][-2:] == [("check", "condition 0"), ("vip", "")]


async def test_branches_read_computed_traits_segments_and_consent(tx: Transactions) -> None:
    publish(tx, JourneyGraph(
        trigger=EventTrigger("cart_updated"), entry_node_id="route",
        nodes=(Node("route", BranchAction((
            BranchCondition("profile.computed.orders_30d > 0", "buyer"),
            BranchCondition("'vip' in profile.segments", "vip"),
            BranchCondition("profile.consent.email == 'unsubscribed'", "quiet")), "other")),
            Node("buyer", ExitAction()), Node("vip", ExitAction()), Node("quiet", ExitAction()),
            Node("other", ExitAction()))))
    peers = Peers()
    for name in ("ada", "bob", "cy", "dan"):
        enroll(tx, name, {"email": f"{name}@example.com"})
    peers.set("ada", {}, computed={"orders_30d": 2})
    peers.set("bob", {}, computed={"orders_30d": 0}, segments=("vip", "newsletter"))
    peers.people["cy"] = {**peers.people["bob"], "segments": [],
                          "consent": {"email": "unsubscribed"}}
    peers.set("dan", {})
    await StepRound(tx, peers, SETTINGS).run()
    ended = {p: steps[-1].node_id for p, (_, steps) in enrollments(tx).items()}
    assert ended == {"ada": "buyer", "bob": "vip", "cy": "quiet", "dan": "other"}


async def test_identity_unavailable_advances_nobody_and_retries_later(
        tx: Transactions, clock: ManualClock) -> None:
    publish(tx, MAIL)
    enroll(tx, "ada", {"email": "ada@example.com"})
    peers = Peers()
    peers.set("ada", {"email": "ada@example.com"})
    peers.down = True
    steps_round = StepRound(tx, peers, SETTINGS)
    await steps_round.run()
    held, steps = enrollments(tx)["ada"]
    assert not peers.sent and not steps
    assert (held.state, held.current_node_id, held.attempts) == (
        EnrollmentState.ACTIVE, "mail", 1)
    assert "the profile could not be read" in held.last_error
    assert not await steps_round.run() and len(peers.calls) == 1  # backing off: not due yet
    peers.down = False
    clock.advance(timedelta(seconds=2))
    await steps_round.run()
    assert [s.address for s in peers.sent] == ["ada@example.com"]
    assert enrollments(tx)["ada"][0].state is EnrollmentState.COMPLETED


async def test_identity_unavailable_for_good_fails_the_step_after_the_retries(
        tx: Transactions, clock: ManualClock) -> None:
    publish(tx, MAIL)
    enroll(tx, "ada", {"email": "ada@example.com"})
    peers = Peers()
    peers.down = True
    steps_round = StepRound(tx, peers, SETTINGS)
    for _ in range(SETTINGS.retry.max_attempts):
        await steps_round.run()
        clock.advance(SETTINGS.retry.max_delay + timedelta(seconds=1))
    failed, _ = enrollments(tx)["ada"]
    assert failed.state is EnrollmentState.FAILED
    assert f"gave up after {SETTINGS.retry.max_attempts} attempts" in failed.last_error
    assert not peers.sent


async def test_an_erased_profile_is_sent_nothing_and_exits(tx: Transactions) -> None:
    publish(tx, MAIL)
    enroll(tx, "ada", {"email": "ada@example.com"})
    peers = Peers()  # identity no longer has ada: NOT_FOUND
    await StepRound(tx, peers, SETTINGS).run()
    gone, steps = enrollments(tx)["ada"]
    assert not peers.sent
    assert (gone.state, gone.exit_reason) == (EnrollmentState.EXITED, "profile_deleted")
    assert [s.detail for s in steps] == ["profile deleted"]
