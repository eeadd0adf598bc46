"""HandleEvents reads an event's properties and traits only when a journey may use them: also
when an enrollment its profile gets earlier in the same batch (a trigger, or a merge moving
one in) reaches it, and when it is deferred behind a merged profile's step (review rrecv: these
were applied, or kept pending, with no properties). Each batch also runs with every event read
up front (the behaviour before the lazy reads) as the oracle. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from test_lean_receipt import clock, receiver_on, tx  # noqa: F401
from test_receive_handoff import WS
from test_unread_events import Lazy, unread

from cjo_orchestration.adapters.tables import enrollments
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    ExitCriterion,
    Goal,
    JourneyGraph,
    Node,
    SendAction,
)
from cjo_orchestration.domain.lifecycle import PROFILE_MERGED
from cjo_orchestration.service_layer import events, journeys
from cjo_platform.db.unit_of_work import Transactions

TRIAL = JourneyGraph(
    trigger=EventTrigger("trial_started"), entry_node_id="mail",
    goal=Goal("purchased", "event.total > 10", timedelta(days=7)),
    exit_criteria=(ExitCriterion("cancelled", 'event.reason == "price"'),),
    nodes=(Node("mail", SendAction("hi", Channel.EMAIL, "done")), Node("done", ExitAction())))
TRAITS = {"first_name": "Ada", "consent": {}}


def publish(tx: Transactions) -> None:  # noqa: F811
    tx.run_sync(lambda uow: journeys.create(uow, WS, "trial", "Trial", TRIAL))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "trial", set()))


def eager(event_id: str, profile_id: str, name: str, properties: dict) -> events.ForwardedEvent:
    return events.ForwardedEvent(event_id, profile_id, name, properties, dict(TRAITS), "")


def lazy(event_id: str, profile_id: str, name: str, properties: dict) -> events.ForwardedEvent:
    return unread(event_id, profile_id, name, Lazy(properties, TRAITS))


def rows(tx: Transactions) -> dict[str, tuple[str, bool, str]]:  # noqa: F811
    with tx.db.transaction() as session:
        return {r.profile_id: (r.state, r.goal_time is not None, r.last_error or "")
                for r in session.execute(select(enrollments)).all()
                if r.journey_id == "trial"}


async def _same_batch(tx: Transactions, make) -> dict:  # noqa: F811
    publish(tx)
    receiver = receiver_on(tx)
    await receiver.receive(WS, [make("e1", "ada", "trial_started", {}),
                                make("e2", "ada", "purchased", {"total": 50}),
                                make("e3", "ada", "cancelled", {"reason": "price"})])
    return rows(tx)


async def test_oracle_same_batch_eager(tx: Transactions) -> None:  # noqa: F811
    got = await _same_batch(tx, eager)
    assert {k: v[:2] for k, v in got.items()} == {"ada": ("exited", True)}


async def test_same_batch_goal_and_exit_of_a_new_enrollment_see_the_events_properties(
        tx: Transactions) -> None:  # noqa: F811
    got = await _same_batch(tx, lazy)
    # FAILS on main: purchased/cancelled are not read (no trigger listens to them, ada had no
    # watched enrollment when the batch was read), so the goal and the exit criterion of the
    # enrollment e1 just created are evaluated on {}.
    assert {k: v[:2] for k, v in got.items()} == {"ada": ("exited", True)}, got


async def _after_merge(tx: Transactions, make) -> dict:  # noqa: F811
    publish(tx)
    receiver = receiver_on(tx)
    await receiver.receive(WS, [make("e1", "ada-old", "trial_started", {})])
    # identity merges ada-old into ada, then forwards ada's next event in the same batch.
    await receiver.receive(WS, [
        events.ForwardedEvent("e2", "ada", PROFILE_MERGED, {"merged_profile_id": "ada-old"},
                              {}, ""),
        make("e3", "ada", "cancelled", {"reason": "price"})])
    return rows(tx)


async def test_oracle_after_merge_eager(tx: Transactions) -> None:  # noqa: F811
    got = await _after_merge(tx, eager)
    assert {k: v[0] for k, v in got.items()} == {"ada": "exited"}


async def test_survivors_event_after_a_merge_in_the_same_batch_sees_its_properties(
        tx: Transactions) -> None:  # noqa: F811
    got = await _after_merge(tx, lazy)
    # FAILS on main: ada (the survivor) had no enrollment when the batch was read, so e3 is not
    # read; the merge moves ada-old's enrollment to ada and e3 reaches it with {}.
    assert {k: v[0] for k, v in got.items()} == {"ada": "exited"}, got


async def _deferred_behind_merge(tx: Transactions, clock, make) -> dict:  # noqa: F811
    from orchestration_support import Ids
    from test_receive_handoff import Wakes
    from test_unread_events import stored

    from cjo_orchestration.adapters.journeys import TriggerCache
    from cjo_orchestration.service_layer.events import InboxRound
    from cjo_orchestration.service_layer.handoff import Handoff
    publish(tx)
    handoff = Handoff(lease_seconds=60)
    receiver = receiver_on(tx, handoff, Wakes())
    await receiver.receive(WS, [make("e1", "ada-old", "trial_started", {})])
    handoff.take(100, clock.now())  # ada-old's step holds her enrollment
    await receiver.receive(WS, [
        events.ForwardedEvent("e2", "ada", PROFILE_MERGED, {"merged_profile_id": "ada-old"},
                              {}, ""),
        make("e3", "ada", "cancelled", {"reason": "price"})])
    inbox = stored(tx)
    clock.advance(timedelta(seconds=61))
    await InboxRound(tx, 100, Ids(), max_attempts=5, triggers=TriggerCache()).run()
    return {"e3_row": inbox["e3"][:2], "states": {k: v[0] for k, v in rows(tx).items()}}


async def test_oracle_deferred_behind_merge_eager(tx: Transactions, clock) -> None:  # noqa: F811
    got = await _deferred_behind_merge(tx, clock, eager)
    assert got == {"e3_row": (False, {"reason": "price"}), "states": {"ada": "exited"}}


async def test_event_deferred_behind_a_merged_profiles_step_is_kept_whole(
        tx: Transactions, clock) -> None:  # noqa: F811
    got = await _deferred_behind_merge(tx, clock, lazy)
    # FAILS on main: the merge is deferred (ada-old busy) and makes ada busy too, so e3 is
    # deferred; but _read_used only read events of profiles busy/watched *before* the batch,
    # so keep_pending puts e3 back in the pending tail with {} properties and traits.
    assert got == {"e3_row": (False, {"reason": "price"}), "states": {"ada": "exited"}}, got


async def test_listened_names_per_workspace_and_across_a_publish(tx: Transactions) -> None:  # noqa: F811
    """Control (expected to pass): the listened-name check is per workspace and sees a publish."""
    publish(tx)
    receiver = receiver_on(tx)
    other = Lazy({"plan": "x"}, TRAITS)
    await receiver.receive("ws2", [unread("o1", "ada", "trial_started", other)])
    assert other.reads == 0
    mine = Lazy({"plan": "y"}, TRAITS)
    await receiver.receive(WS, [unread("m1", "ada", "trial_started", mine)])
    assert mine.reads == 1
    tx.run_sync(lambda uow: journeys.create(uow, "ws2", "t2", "Trial2", TRIAL))
    tx.run_sync(lambda uow: journeys.publish(uow, "ws2", "t2", set()))
    again = Lazy({"plan": "z"}, TRAITS)
    await receiver.receive("ws2", [unread("o2", "bob", "trial_started", again)])
    assert again.reads == 1
    with tx.db.transaction() as session:
        got = sorted((r.workspace_id, r.profile_id, r.properties["plan"])
                     for r in session.execute(select(enrollments)).all())
    assert got == [("ws", "ada", "y"), ("ws2", "bob", "z")]
