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
from cjo.identity.v1 import profile_pb2
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
from cjo_orchestration.domain.orders import Deferred, ProfileOrder, SendResult, Sent
from cjo_orchestration.service_layer import enrollment, events, journeys
from cjo_orchestration.service_layer.enrollment import Entrant
from cjo_orchestration.service_layer.events import InboxRound
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.limits import MAX_FORWARDED_PROFILE_BYTES
from cjo_platform.profiles import (
    PROFILE_TRIM_FIELDS,
    profile_view,
    trim_profile,
    view_from_proto,
)
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
        self.defer_sends = 0  # delivery defers this many sends first

    async def render(self, workspace_id: str,
                     items: Sequence[RenderItem]) -> list[RenderOutcome]:
        self.rendered.extend(items)
        return [RenderedMessage(content_key=item.content_key) for item in items]

    async def send(self, workspace_id: str, items: Sequence[SendItem]) -> list[SendResult]:
        self.sent.extend(items)
        if self.defer_sends > 0:
            self.defer_sends -= 1
            return [Deferred("delivery: UNAVAILABLE") for _ in items]
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


def forward_merge(tx: Transactions, merged: str, survivor: str) -> None:
    """Identity's profile_merged event reaches orchestration (its inbox), as the outbox sends it."""
    tx.run_sync(lambda uow: events.receive(uow, WS, [events.ForwardedEvent(
        f"profile_merged:{merged}:{survivor}", survivor, "profile_merged",
        {"merged_profile_id": merged}, {}, "")]))


async def apply_events(tx: Transactions) -> None:
    await InboxRound(tx, 100, IDS, max_attempts=5).run()


async def test_a_merged_away_visitor_is_mailed_at_the_survivors_address(
        tx: Transactions, clock: ManualClock) -> None:
    publish(tx, MAIL)
    enroll(tx, "visitor", {"anonymous_id": "cookie-1"})  # no address when entering
    peers = Peers()
    peers.set("known", {"email": "known@example.com"})
    peers.merged["visitor"] = "known"  # logged in during the wait: merged into a CRM profile
    steps_round = StepRound(tx, peers, SETTINGS)
    await steps_round.run()
    # Identity answered the survivor before its merge event arrived: the step waits for it
    # (a short fixed delay, no attempt counted) rather than act under the dead id.
    waiting, _ = enrollments(tx)["visitor"]
    assert not peers.sent and waiting.attempts == 0
    assert waiting.due_time == clock.now() + SETTINGS.merge_wait
    assert "waiting for identity's merge of profile visitor into known" in waiting.last_error
    forward_merge(tx, "visitor", "known")
    await apply_events(tx)
    clock.advance(SETTINGS.merge_wait)
    await steps_round.run()
    [sent] = peers.sent
    assert (sent.address, sent.profile_id) == ("known@example.com", "known")


async def test_both_profiles_of_one_person_in_a_journey_get_one_mail_after_a_merge(
        tx: Transactions, clock: ManualClock) -> None:
    """A visitor and the account it logs into both walk journey J; identity merges them before
    the step round, its profile_merged event after: one mail, after the event round merged the
    two enrollments (the one that entered first goes on), none before."""
    publish(tx, MAIL)
    enroll(tx, "visitor", {"anonymous_id": "cookie-1"})
    clock.advance(timedelta(seconds=5))
    enroll(tx, "known", {"email": "known@example.com"})
    peers = Peers()
    peers.set("known", {"email": "known@example.com"})
    peers.merged["visitor"] = "known"
    steps_round = StepRound(tx, peers, SETTINGS)
    await steps_round.run()
    assert not peers.sent  # neither acts on a merge this journey has not applied
    held = enrollments(tx)
    assert {p: (e.state, e.attempts) for p, (e, _) in held.items()} == {
        "visitor": (EnrollmentState.ACTIVE, 0), "known": (EnrollmentState.ACTIVE, 0)}
    clock.advance(SETTINGS.merge_wait)
    await steps_round.run()
    assert not peers.sent  # still no event: still waiting
    forward_merge(tx, "visitor", "known")
    await apply_events(tx)
    clock.advance(SETTINGS.merge_wait)
    await steps_round.run()
    [sent] = peers.sent
    assert (sent.address, sent.profile_id) == ("known@example.com", "known")
    page, _ = tx.run_sync(lambda uow: enrollment.list_enrollments(uow, WS, "j1", "", 100, None))
    found = [e for e, _ in page]
    assert sorted((e.profile_id, e.state, e.exit_reason) for e in found) == [
        ("known", EnrollmentState.COMPLETED, "completed"),
        ("known", EnrollmentState.EXITED, "merged")]
    [kept] = [e for e in found if e.state is EnrollmentState.COMPLETED]
    assert sent.enrollment_id == kept.enrollment_id  # the visitor's: it entered first


async def test_a_merge_of_people_past_the_profile_bound_still_holds_back_their_mail(
        tx: Transactions, clock: ManualClock) -> None:
    """The same person as above, but identity's copy of the merged profile is past its bound by
    many small traits (4 people of 400 traits of 500 characters) and comes trimmed as identity
    trims it: the copy left out every merge, so the merge wait did not hold and the person was
    mailed twice (the visitor's enrollment and the known one's, to the same address). The
    merges stay now: one mail, after the event round merged the enrollments."""
    publish(tx, MAIL)
    enroll(tx, "visitor", {"anonymous_id": "cookie-1"})
    clock.advance(timedelta(seconds=5))
    enroll(tx, "known", {"email": "known@example.com"})
    record = profile_pb2.Profile(profile_id="known")
    record.traits.update({f"p{n}_t{i:03d}": chr(97 + n) * 500 for n in range(4)
                          for i in range(400)})
    record.traits["email"] = "known@example.com"
    for kind, value in (("anonymous_id", "cookie-1"), ("email", "known@example.com")):
        record.identifiers.add(type=kind, value=value)
    merge = record.merged_from.add(merged_profile_id="visitor", survivor_profile_id="known")
    merge.merge_time.FromDatetime(clock.now())
    assert trim_profile(record, MAX_FORWARDED_PROFILE_BYTES, "traits", **PROFILE_TRIM_FIELDS)
    peers = Peers()
    peers.people["known"] = view_from_proto(record)
    peers.merged["visitor"] = "known"
    merges = {m.merged_profile_id: m.merge_time.ToDatetime(tzinfo=UTC)
              for m in record.merged_from}  # what the trimmed copy lists
    peers.merged_at.update(merges)
    peers.unlisted.update({"visitor"} - set(merges))
    steps_round = StepRound(tx, peers, SETTINGS)
    await steps_round.run()
    assert not peers.sent
    forward_merge(tx, "visitor", "known")
    await apply_events(tx)
    clock.advance(SETTINGS.merge_wait)
    await steps_round.run()
    assert [(s.profile_id, s.address) for s in peers.sent] == [("known", "known@example.com")]


async def test_a_merge_whose_event_never_came_holds_nobody_back_for_good(
        tx: Transactions, clock: ManualClock) -> None:
    publish(tx, MAIL)
    enroll(tx, "visitor", {})
    peers = Peers()
    peers.set("known", {"email": "known@example.com"})
    peers.merged["visitor"] = "known"
    peers.merged_at["visitor"] = clock.now() - SETTINGS.merge_wait_limit
    await StepRound(tx, peers, SETTINGS).run()
    assert [s.address for s in peers.sent] == ["known@example.com"]


async def test_a_profile_merged_through_a_chain_waits_only_as_long_as_its_last_link(
        tx: Transactions, clock: ManualClock) -> None:
    """The visitor was merged into "middle", then "middle" into "known": identity answers the
    visitor's id with "known" but lists only "middle" in its merged_from. The step waits while
    that last merge is recent, and acts once it is older than the limit (its events never
    came), instead of waiting for good."""
    publish(tx, MAIL)
    enroll(tx, "visitor", {})
    peers = Peers()
    peers.set("known", {"email": "known@example.com"})
    peers.merged.update(visitor="known", middle="known")
    peers.merged_at["middle"] = clock.now()
    peers.unlisted.add("visitor")
    steps_round = StepRound(tx, peers, SETTINGS)
    await steps_round.run()
    assert not peers.sent
    clock.advance(SETTINGS.merge_wait_limit)
    await steps_round.run()
    assert [s.address for s in peers.sent] == ["known@example.com"]


async def test_a_merge_identity_does_not_list_at_all_holds_nobody_back(
        tx: Transactions) -> None:
    publish(tx, MAIL)
    enroll(tx, "visitor", {})
    peers = Peers()
    peers.set("known", {"email": "known@example.com"})
    peers.merged["visitor"] = "known"
    peers.unlisted.add("visitor")
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
        EnrollmentState.ACTIVE, "mail", 0)  # identity's trouble is no attempt of the step
    assert "the profile could not be read" in held.last_error
    assert not await steps_round.run() and len(peers.calls) == 1  # backing off: not due yet
    peers.down = False
    clock.advance(timedelta(seconds=2))
    await steps_round.run()
    assert [s.address for s in peers.sent] == ["ada@example.com"]
    assert enrollments(tx)["ada"][0].state is EnrollmentState.COMPLETED


async def test_a_long_identity_outage_fails_nobody_and_the_mail_goes_out_after_it(
        tx: Transactions, clock: ManualClock) -> None:
    """20 profile reads in a row fail (more than the send retries allow): the enrollment keeps
    waiting, with a backoff that grows to its cap and no further, and is mailed once identity
    answers again."""
    publish(tx, MAIL)
    enroll(tx, "ada", {"email": "ada@example.com"})
    peers = Peers()
    peers.set("ada", {"email": "ada@example.com"})
    peers.down = True
    steps_round = StepRound(tx, peers, SETTINGS)
    backoff = SETTINGS.profile_read_backoff
    waits = []
    for _ in range(20):
        assert not await steps_round.run()
        held, _ = enrollments(tx)["ada"]
        assert (held.state, held.attempts) == (EnrollmentState.ACTIVE, 0)
        waits.append(held.due_time - clock.now())
        clock.advance(backoff.max_delay)
    assert len(peers.calls) == 20 and not peers.sent
    # Equal jitter: between half the doubling ceiling and the ceiling, capped at max_delay.
    for failures, wait in enumerate(waits, start=1):
        ceiling = min(backoff.base_delay * 2 ** (failures - 1), backoff.max_delay)
        assert ceiling / 2 <= wait <= ceiling
    assert steps_round.identity_failures == {WS: 20}
    peers.down = False
    await steps_round.run()
    assert [s.address for s in peers.sent] == ["ada@example.com"]
    done, _ = enrollments(tx)["ada"]
    assert done.state is EnrollmentState.COMPLETED
    assert steps_round.identity_failures == {}  # a read that succeeds forgets the backoff


async def test_send_retries_and_an_identity_blip_do_not_add_up_to_a_failure(
        tx: Transactions, clock: ManualClock) -> None:
    """9 delivery deferrals (one short of the send retries) and one failed profile read: the
    10th send goes out."""
    publish(tx, MAIL)
    enroll(tx, "ada", {"email": "ada@example.com"})
    peers = Peers()
    peers.set("ada", {"email": "ada@example.com"})
    peers.defer_sends = SETTINGS.retry.max_attempts - 1
    steps_round = StepRound(tx, peers, SETTINGS)
    for _ in range(SETTINGS.retry.max_attempts - 1):
        await steps_round.run()
        clock.advance(SETTINGS.retry.max_delay)
    held, _ = enrollments(tx)["ada"]
    assert (held.state, held.attempts) == (EnrollmentState.ACTIVE, SETTINGS.retry.max_attempts - 1)
    peers.failures = 1  # identity blips once
    await steps_round.run()
    clock.advance(SETTINGS.profile_read_backoff.max_delay)
    await steps_round.run()
    done, _ = enrollments(tx)["ada"]
    assert done.state is EnrollmentState.COMPLETED
    assert len(peers.sent) == SETTINGS.retry.max_attempts  # 9 deferred, then the one accepted


async def test_an_erased_profile_is_sent_nothing_and_exits(tx: Transactions) -> None:
    publish(tx, MAIL)
    enroll(tx, "ada", {"email": "ada@example.com"})
    peers = Peers()
    peers.set("ada", {"email": "ada@example.com"})
    peers.erase("ada")  # identity no longer has ada: NOT_FOUND (Enroll checked it existed)
    await StepRound(tx, peers, SETTINGS).run()
    gone, steps = enrollments(tx)["ada"]
    assert not peers.sent
    assert (gone.state, gone.exit_reason) == (EnrollmentState.EXITED, "profile_deleted")
    assert [s.detail for s in steps] == ["profile deleted"]


async def test_a_login_sent_only_as_an_identifier_is_mailed_at_that_address(
        tx: Transactions) -> None:
    """A visitor logs in with an identify event carrying identifiers=[email] and no `email`
    trait: the mail goes to the email identifier, and conditions read `profile.identifiers`."""
    publish(tx, JourneyGraph(
        trigger=EventTrigger("cart_updated"), entry_node_id="known",
        nodes=(Node("known", BranchAction((BranchCondition(
            "has(profile.identifiers.email) && "
            "'ada@example.com' in profile.identifiers.email", "mail"),), "done")),
            Node("mail", SendAction("reminder", Channel.EMAIL, "done")),
            Node("done", ExitAction()))))
    enroll(tx, "ada", {})
    peers = Peers()
    peers.people["ada"] = profile_view({"name": "Ada"}, identifiers=[
        ("anonymous_id", "cookie-1"), ("email", "old@example.com"),
        ("email", "ada@example.com")])
    await StepRound(tx, peers, SETTINGS).run()
    # The email identity linked last; templates see the identifiers too.
    assert [s.address for s in peers.sent] == ["ada@example.com"]
    assert peers.rendered[0].traits["identifiers"]["anonymous_id"] == ["cookie-1"]
    assert enrollments(tx)["ada"][0].state is EnrollmentState.COMPLETED


async def test_an_address_trait_still_wins_over_the_identifiers(tx: Transactions) -> None:
    publish(tx, MAIL)
    enroll(tx, "ada", {})
    peers = Peers()
    peers.people["ada"] = profile_view({"email": "home@example.com"},
                                       identifiers=[("email", "work@example.com")])
    await StepRound(tx, peers, SETTINGS).run()
    assert [s.address for s in peers.sent] == ["home@example.com"]


async def test_update_profile_reaches_a_profile_known_only_by_its_user_id(
        tx: Transactions) -> None:
    publish(tx, JourneyGraph(
        trigger=EventTrigger("cart_updated"), entry_node_id="promote",
        nodes=(Node("promote", UpdateProfileAction({"vip": True}, "done")),
               Node("done", ExitAction()))))
    enroll(tx, "ada", {})
    peers = Peers()
    peers.people["ada"] = profile_view({}, identifiers=[("user_id", "u-42")])
    await StepRound(tx, peers, SETTINGS).run()
    assert [o.identifiers for o in peers.updates] == [(("user_id", "u-42"),)]
    done, _ = enrollments(tx)["ada"]
    assert done.state is EnrollmentState.COMPLETED
