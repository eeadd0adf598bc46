"""HandleEvents reads a received event's properties and traits (the profile view built from the
request's Structs) only when a journey may use them: a journey listens to its name, an
enrollment of its profile watches events, or its profile's step runs (deferred, it goes back
to the inbox whole). Stored processed and applied at once, an event nothing uses keeps its id
in the inbox (a redelivery is still a duplicate) without them. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from orchestration_support import Ids
from sqlalchemy import select

# The clock and the database with the welcome journey published (fixtures).
from test_lean_receipt import clock, receiver_on, tx  # noqa: F401
from test_receive_handoff import WS, Wakes

from cjo_orchestration.adapters.journeys import TriggerCache
from cjo_orchestration.adapters.tables import enrollments, inbox
from cjo_orchestration.service_layer import events
from cjo_orchestration.service_layer.events import InboxRound
from cjo_orchestration.service_layer.handoff import Handoff
from cjo_platform.clock import ManualClock
from cjo_platform.db.unit_of_work import Transactions

PROPERTIES = {"plan": "pro"}
TRAITS = {"first_name": "Ada", "consent": {}}


class Lazy:
    """An event's properties and traits, read when asked (counted)."""

    def __init__(self, properties: Mapping[str, Any], traits: Mapping[str, Any]) -> None:
        self.contents = (dict(properties), dict(traits))
        self.reads = 0

    def __call__(self) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        self.reads += 1
        return self.contents


def unread(event_id: str, profile_id: str, name: str,
           contents: Lazy) -> events.ForwardedEvent:
    return events.ForwardedEvent(event_id, profile_id, name, {}, {}, "", unread=contents)


def stored(db: Transactions) -> dict[str, tuple[bool, Any, Any]]:
    """Each inbox row's (processed, properties, traits), by event id."""
    with db.db.transaction() as session:
        return {r.event_id: (r.processed, r.properties, r.traits) for r in session.execute(
            select(inbox.c.event_id, inbox.c.processed, inbox.c.properties, inbox.c.traits))}


async def test_an_event_no_journey_can_use_is_stored_without_being_read(
        tx: Transactions) -> None:  # noqa: F811
    receiver = receiver_on(tx)
    contents = Lazy(PROPERTIES, TRAITS)

    assert await receiver.receive(WS, [unread("e1", "ada", "page_viewed", contents)]) == [True]
    assert contents.reads == 0
    assert stored(tx) == {"e1": (True, {}, {})}
    # Its row still dedupes a redelivery.
    again = Lazy(PROPERTIES, TRAITS)
    assert await receiver.receive(WS, [unread("e1", "ada", "page_viewed", again)]) == [False]
    assert stored(tx) == {"e1": (True, {}, {})}


async def test_a_triggering_event_is_read_and_its_enrollment_holds_what_it_carried(
        tx: Transactions) -> None:  # noqa: F811
    receiver = receiver_on(tx)
    contents = Lazy(PROPERTIES, TRAITS)

    await receiver.receive(WS, [unread("e1", "ada", "signed_up", contents)])
    assert contents.reads == 1
    with tx.db.transaction() as session:
        (row,) = session.execute(select(enrollments.c.profile_id, enrollments.c.properties,
                                        enrollments.c.traits)).all()
    assert (row.profile_id, row.properties, row.traits) == ("ada", PROPERTIES, TRAITS)


async def test_events_deferred_behind_their_profiles_step_go_back_to_the_inbox_whole(
        tx: Transactions, clock: ManualClock) -> None:  # noqa: F811
    handoff = Handoff(lease_seconds=60)
    receiver = receiver_on(tx, handoff, Wakes())
    await receiver.receive(WS, [unread("e1", "ada", "signed_up", Lazy(PROPERTIES, TRAITS))])
    handoff.take(100, clock.now())  # ada's step holds her enrollment

    # One her enrollment watches (an exit criterion), one nothing listens to: both wait
    # behind her step, so both are read and kept whole for the event round; Bob's (no
    # enrollment, no journey listening) is not read.
    watched, other, bobs = (Lazy({"why": "too many"}, TRAITS), Lazy({"path": "/"}, TRAITS),
                            Lazy({"path": "/"}, TRAITS))
    await receiver.receive(WS, [unread("e2", "ada", "unsubscribed", watched),
                                unread("e3", "ada", "page_viewed", other),
                                unread("e4", "bob", "page_viewed", bobs)])
    assert (watched.reads, other.reads, bobs.reads) == (1, 1, 0)
    rows = stored(tx)
    assert rows["e2"] == (False, {"why": "too many"}, TRAITS)
    assert rows["e3"] == (False, {"path": "/"}, TRAITS)
    assert rows["e4"] == (True, {}, {})

    # The step is over (its lease ran out): the event round applies them from their rows,
    # the exit criterion ends ada's enrollment.
    clock.advance(timedelta(seconds=61))
    applied = await InboxRound(tx, 100, Ids(), max_attempts=5, triggers=TriggerCache()).run()
    assert (applied.handled, applied.deferred) == (2, 0)
    with tx.db.transaction() as session:
        assert session.execute(select(enrollments.c.state)).scalar_one() == "exited"
