"""The orchestration use-cases called directly, each in a unit of work on a temporary SQLite
database: no gRPC, no peers (the step round's are a recording stand-in), the clock by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from orchestration_support import Ids, RecordingPeers, transactions_on
from sqlalchemy import select

import cjo_orchestration.adapters
from cjo.analytics.v1 import fact_pb2
from cjo.common.v1.common_pb2 import RenderedMessage
from cjo_orchestration.adapters import enrollments as store
from cjo_orchestration.adapters.tables import metadata
from cjo_orchestration.domain.enrollment import EnrollmentState
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    ExitCriterion,
    JourneyChanges,
    JourneyGraph,
    JourneyState,
    Node,
    ReEntry,
    Schedule,
    SendAction,
    TriggerKind,
)
from cjo_orchestration.service_layer import enrollment, events, journeys, schedules
from cjo_orchestration.service_layer.enrollment import Entrant, Entry
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from cjo_platform.facts import FACTS_TOPIC

WS = "ws"
START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
MIGRATIONS = Path(str(cjo_orchestration.adapters.__file__)).parent / "migrations"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def tx(tmp_path: Path, clock: ManualClock) -> Transactions:
    db = Database(f"sqlite:///{tmp_path}/orchestration.db")
    upgrade(db, MIGRATIONS)
    return transactions_on(db, clock)



def cart_reminder(re_entry: ReEntry = ReEntry.NEVER) -> JourneyGraph:
    return JourneyGraph(
        trigger=EventTrigger("cart_updated"), entry_node_id="remind", re_entry=re_entry,
        nodes=(Node("remind", SendAction("cart", Channel.EMAIL, "done")),
               Node("done", ExitAction())))


def active_journey(tx: Transactions, graph: JourneyGraph, journey_id: str = "j1") -> None:
    tx.run_sync(lambda uow: journeys.create(uow, WS, journey_id, "Cart reminder", graph))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, journey_id, set()))


def facts(tx: Transactions) -> list[int]:
    """Types of the facts queued for analytics, in order."""
    table = metadata.tables["outbox"]
    rows = tx.run_sync(lambda uow: uow.session.execute(
        select(table.c.payload).where(table.c.topic == FACTS_TOPIC).order_by(table.c.id)).all())
    return [fact_pb2.Fact.FromString(r.payload).type for r in rows]


def event(event_id: str, profile_id: str, name: str = "cart_updated") -> events.ForwardedEvent:
    return events.ForwardedEvent(event_id, profile_id, name, {"sku": "A-1"},
                                 {"email": f"{profile_id}@example.com"}, "")


# --- journeys ----------------------------------------------------------------------------------


def test_a_journey_goes_from_draft_to_archived(tx: Transactions) -> None:
    draft = tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Cart", cart_reminder()))
    assert (draft.state, draft.published_version, draft.etag) == (JourneyState.DRAFT, 0, '"1"')
    renamed = tx.run_sync(lambda uow: journeys.update(
        uow, WS, "j1", JourneyChanges(frozenset({"display_name"}), "Cart reminder"), '"1"'))
    assert renamed.display_name == "Cart reminder"
    with pytest.raises(Aborted):  # another editor's etag
        tx.run_sync(lambda uow: journeys.update(
            uow, WS, "j1", JourneyChanges(frozenset({"display_name"}), "Mine"), '"1"'))

    with pytest.raises(InvalidArgument) as missing:
        tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", {"cart"}))
    assert missing.value.reason == "JOURNEY_NOT_PUBLISHABLE"
    published = tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    assert (published.state, published.published_version) == (JourneyState.ACTIVE, 1)

    paused = tx.run_sync(lambda uow: journeys.pause(uow, WS, "j1"))
    assert paused.state is JourneyState.PAUSED
    assert tx.run_sync(lambda uow: journeys.pause(uow, WS, "j1")) == paused  # harmless again
    assert tx.run_sync(lambda uow: journeys.resume(uow, WS, "j1")).state is JourneyState.ACTIVE
    archived = tx.run_sync(lambda uow: journeys.archive(uow, WS, "j1"))
    assert archived.state is JourneyState.ARCHIVED
    with pytest.raises(FailedPrecondition):
        tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    assert tx.run_sync(lambda uow: journeys.get(uow, WS, "j1")) == archived
    with pytest.raises(NotFound):
        tx.run_sync(lambda uow: journeys.get(uow, "other-workspace", "j1"))


def test_journeys_are_listed_oldest_first_a_page_at_a_time(tx: Transactions,
                                                           clock: ManualClock) -> None:
    for name in ("a", "b", "c"):
        tx.run_sync(lambda uow, name=name: journeys.create(uow, WS, name, name, JourneyGraph()))
        clock.advance(timedelta(seconds=1))
    first, more = tx.run_sync(lambda uow: journeys.list_journeys(uow, WS, 2, None))
    assert [j.journey_id for j in first] == ["a", "b"] and more
    after = (first[-1].create_time, first[-1].journey_id)
    rest, more = tx.run_sync(lambda uow: journeys.list_journeys(uow, WS, 2, after))
    assert [j.journey_id for j in rest] == ["c"] and not more


def test_a_draft_with_a_bad_shape_is_refused_naming_the_field(tx: Transactions) -> None:
    with pytest.raises(InvalidArgument) as refused:
        tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "x" * 1000, JourneyGraph()))
    assert "journey.display_name" in {v.field for v in refused.value.violations}


# --- the one enrollment path -------------------------------------------------------------------


def test_enroll_admits_each_profile_once_and_says_why_not(tx: Transactions) -> None:
    active_journey(tx, cart_reminder())
    new_id = Ids()
    admitted = tx.run_sync(lambda uow: enrollment.enroll_profile(
        uow, WS, "j1", Entrant("ada", {"email": "ada@example.com"}, {}), "enroll:r1", "",
        new_id))
    assert admitted.enrollment is not None and admitted.skip_reason == ""
    assert admitted.enrollment.event_id == "enroll:r1"
    again = tx.run_sync(lambda uow: enrollment.enroll_profile(
        uow, WS, "j1", Entrant("ada", {}, {}), "enroll:r2", "", new_id))
    assert (again.enrollment, again.skip_reason) == (None, "already_active")
    # One entry, for the one enrollment, and its arrival at the entry node.
    assert facts(tx) == [fact_pb2.FACT_TYPE_JOURNEY_ENTERED, fact_pb2.FACT_TYPE_NODE_VISITED]

    tx.run_sync(lambda uow: journeys.pause(uow, WS, "j1"))
    with pytest.raises(FailedPrecondition) as paused:
        tx.run_sync(lambda uow: enrollment.enroll_profile(
            uow, WS, "j1", Entrant("bob", {}, {}), "enroll:r3", "", new_id))
    assert paused.value.reason == "JOURNEY_NOT_ACTIVE"


def test_one_entry_enrolls_many_and_a_racing_enrollment_wins_once(tx: Transactions) -> None:
    graph = cart_reminder(ReEntry.ALWAYS)
    active_journey(tx, graph)
    entry = Entry(WS, "j1", 1, graph, "occurrence-1")
    entrants = [Entrant(p, {"email": f"{p}@example.com"}, {"segment_id": "s"})
                for p in ("ada", "bob")]
    first = tx.run_sync(lambda uow: enrollment.enroll(uow, entry, entrants, Ids()))
    assert [a.enrollment.profile_id for a in first if a.enrollment] == ["ada", "bob"]
    # Both still active: re-entry ALWAYS never makes a second active enrollment.
    second = tx.run_sync(lambda uow: enrollment.enroll(uow, entry, entrants, Ids()))
    assert [a.skip_reason for a in second] == ["already_active", "already_active"]
    assert facts(tx) == [fact_pb2.FACT_TYPE_JOURNEY_ENTERED, fact_pb2.FACT_TYPE_NODE_VISITED] * 2


# --- events --------------------------------------------------------------------------------------


def test_events_are_stored_once_and_applied_in_order(tx: Transactions) -> None:
    active_journey(tx, cart_reminder())
    new = tx.run_sync(lambda uow: events.receive(uow, WS, [
        event("e1", "ada"), event("e2", "ada"), event("e1", "ada")]))
    assert new == [True, True, False]  # a repeat in the batch is a duplicate
    assert tx.run_sync(lambda uow: events.receive(uow, WS, [event("e2", "ada")])) == [False]

    applied = tx.run_sync(lambda uow: events.apply_inbox(uow, 100, Ids()))
    assert (applied.handled, applied.enrolled) == (2, 1)  # two events, one enrollment
    [(found, steps)], more = tx.run_sync(lambda uow: enrollment.list_enrollments(
        uow, WS, "j1", "ada", 10, None))
    assert (found.state, found.current_node_id, steps, more) == (
        EnrollmentState.ACTIVE, "remind", [], False)
    assert found.traits == {"email": "ada@example.com"}
    assert tx.run_sync(lambda uow: events.apply_inbox(uow, 100, Ids())).handled == 0


def test_facts_of_one_event_round_go_out_in_the_order_things_happened(
        tx: Transactions) -> None:
    graph = replace(cart_reminder(ReEntry.ALWAYS),
                    exit_criteria=(ExitCriterion("cart_emptied"),))
    active_journey(tx, graph)
    tx.run_sync(lambda uow: events.receive(uow, WS, [event("e1", "ada")]))
    tx.run_sync(lambda uow: events.apply_inbox(uow, 100, Ids()))
    assert facts(tx) == [fact_pb2.FACT_TYPE_JOURNEY_ENTERED, fact_pb2.FACT_TYPE_NODE_VISITED]
    # One round: the person empties the cart (exit criterion), then fills it again (re-entry).
    tx.run_sync(lambda uow: events.receive(uow, WS, [
        event("e2", "ada", name="cart_emptied"), event("e3", "ada")]))
    ids = Ids()
    ids.count = 100
    tx.run_sync(lambda uow: events.apply_inbox(uow, 100, ids))
    assert facts(tx)[2:] == [fact_pb2.FACT_TYPE_JOURNEY_EXITED,
                             fact_pb2.FACT_TYPE_JOURNEY_ENTERED, fact_pb2.FACT_TYPE_NODE_VISITED]


# --- the step round ------------------------------------------------------------------------------


async def test_a_step_round_sends_once_and_records_the_steps(tx: Transactions) -> None:
    active_journey(tx, cart_reminder())
    tx.run_sync(lambda uow: enrollment.enroll_profile(
        uow, WS, "j1", Entrant("ada", {"email": "ada@example.com"}, {}), "r1", "", Ids()))
    peers = RecordingPeers("ada")
    steps = StepRound(tx, peers, load_engine_settings(Env({})))
    assert not await steps.run()  # not a full batch
    [sent] = peers.sent
    assert (sent.address, sent.content, sent.profile_id) == (
        "ada@example.com", RenderedMessage(content_key="cart"), "ada")
    [(done, taken)], _ = tx.run_sync(lambda uow: enrollment.list_enrollments(
        uow, WS, "j1", "", 10, None))
    assert done.state is EnrollmentState.COMPLETED
    assert [(s.node_id, s.detail) for s in taken] == [
        ("remind", f"m-{sent.idempotency_key}"), ("done", "")]
    assert fact_pb2.FACT_TYPE_MESSAGE_REQUESTED in facts(tx)
    assert not await steps.run()  # nothing due: nothing sent again
    assert len(peers.sent) == 1


async def test_a_deferred_send_is_retried_later_not_now(tx: Transactions,
                                                       clock: ManualClock) -> None:
    active_journey(tx, cart_reminder())
    tx.run_sync(lambda uow: enrollment.enroll_profile(
        uow, WS, "j1", Entrant("ada", {"email": "ada@example.com"}, {}), "r1", "", Ids()))
    peers = RecordingPeers("ada", accept=False)
    steps = StepRound(tx, peers, load_engine_settings(Env({})))
    await steps.run()
    await steps.run()  # backing off: not due again yet
    assert len(peers.sent) == 1
    clock.advance(timedelta(seconds=2))
    peers.accept = True
    await steps.run()
    assert len(peers.sent) == 2 and peers.sent[0].idempotency_key == peers.sent[1].idempotency_key


# --- scheduled occurrences ---------------------------------------------------------------------


def test_occurrences_of_a_journey_that_does_not_exist_are_not_found(tx: Transactions) -> None:
    with pytest.raises(NotFound):
        tx.run_sync(lambda uow: schedules.list_occurrences(uow, WS, "nope", None, 10, None))


def test_publishing_a_scheduled_journey_plans_its_first_occurrence(tx: Transactions) -> None:
    at = START + timedelta(days=1)
    graph = JourneyGraph(
        trigger=EventTrigger(kind=TriggerKind.SCHEDULED, segment_id="newsletter",
                             schedule=Schedule(at=at)),
        entry_node_id="done", nodes=(Node("done", ExitAction()),))
    active_journey(tx, graph)
    [planned], more = tx.run_sync(lambda uow: schedules.list_occurrences(
        uow, WS, "j1", None, 10, None))
    assert (planned.fire_time, planned.journey_version, more) == (at, 1, False)
    assert tx.run_sync(lambda uow: schedules.get_occurrence(uow, WS, "j1", 1, at)) == planned
    tx.run_sync(lambda uow: journeys.archive(uow, WS, "j1"))
    [cancelled], _ = tx.run_sync(lambda uow: schedules.list_occurrences(
        uow, WS, "j1", None, 10, None))
    assert cancelled.detail == "journey archived"


def test_an_event_given_up_is_a_dead_letter_until_its_profile_is_erased(
        tx: Transactions) -> None:
    from cjo_platform.db.dead_letters import DeadLetters

    letters = DeadLetters(metadata.tables["dead_letters"], tx.clock)
    active_journey(tx, cart_reminder())
    tx.run_sync(lambda uow: events.receive(uow, WS, [event("e1", "ada"), event("e2", "bob")]))
    pending = tx.run_sync(lambda uow: store.pending_events(uow.session, 10))
    for given_up in pending:
        assert tx.run_sync(lambda uow, e=given_up: events.fail_event(
            uow, e, "boom", 1, events.to_dead_letters(letters)))
    assert tx.run_sync(lambda uow: events.apply_inbox(uow, 100, Ids())).handled == 0
    listed = tx.run_sync(lambda uow: letters.list(uow.session, WS))
    assert [(x.item_key, x.source, x.error, x.attempts) for x in listed] == [
        ("e1", "inbox:events", "boom", 1), ("e2", "inbox:events", "boom", 1)]

    tx.run_sync(lambda uow: events.receive(uow, WS, [event("gone", "ada",
                                                           name="profile_deleted")]))
    tx.run_sync(lambda uow: events.apply_inbox(uow, 100, Ids()))
    # The erased person's letter is gone with its contents; bob's stays.
    assert [x.item_key for x in tx.run_sync(lambda uow: letters.list(uow.session, WS))] == [
        "e2"]


def test_a_version_that_no_longer_reads_stops_only_its_own_journey(tx: Transactions) -> None:
    active_journey(tx, cart_reminder(), "j1")
    active_journey(tx, cart_reminder(), "j2")
    versions = metadata.tables["journey_versions"]
    tx.run_sync(lambda uow: uow.session.execute(versions.update().where(
        versions.c.journey_id == "j2").values(definition={"nodes": "not a list"})))
    tx.run_sync(lambda uow: events.receive(uow, WS, [event("e1", "ada")]))
    assert tx.run_sync(lambda uow: events.apply_inbox(uow, 100, Ids())).enrolled == 1
    [(found, _)], _ = tx.run_sync(lambda uow: enrollment.list_enrollments(
        uow, WS, "j1", "ada", 10, None))
    assert found.state is EnrollmentState.ACTIVE
