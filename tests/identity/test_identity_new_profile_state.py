"""A new person's first event travels with the profile as its batch wrote it (computed traits,
segments, identifiers), without reading the new profile back: what orchestration receives is
what the database holds, on both backends. Its identifiers are looked up once (erased, owned)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from identity_support import START, backend_transactions, recorded
from sqlalchemy import select

from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo_identity.adapters import segments as stored_segments
from cjo_identity.adapters.outbox_payloads import EVENTS_TOPIC
from cjo_identity.adapters.tables import outbox
from cjo_identity.domain.computed import Aggregation, ComputedTrait
from cjo_identity.domain.events import EventType, parse_event
from cjo_identity.domain.ingest import Outcome
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer import ingest, segments
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

WS = "acme"
SETTINGS = IdentitySettings(computed_traits=(
    ComputedTrait("orders", Aggregation.COUNT, "order_completed"),
    ComputedTrait("spent", Aggregation.SUM, "order_completed", "total"),
    ComputedTrait("last_order", Aggregation.LAST_TIME, "order_completed"),
))
# What reads a profile's state back (segments.profile_states) and nothing else sends.
READ_BACK = "AS profile_states"
# What the reads of a profile's state were, one statement each, before they shared one.
SEPARATE_READ_BACKS = ("SELECT identifiers.profile_id, identifiers.type",
                       "SELECT profiles.profile_id, profiles.computed")


@pytest.fixture
def tx(backend: Backend) -> Iterator[Transactions]:
    with backend_transactions(backend) as transactions:
        yield transactions


def order(message_id: str, *identifiers: tuple[str, str], total: float,
          traits: dict[str, Any] | None = None) -> Any:
    return parse_event(message_id=message_id, event_type=EventType.TRACK, name="order_completed",
                       identifiers=identifiers, properties={"total": total},
                       traits=traits or {}, timestamp=START - timedelta(minutes=1),
                       source="web", now=START)


def forwarded(tx: Transactions) -> dict[str, orchestration_pb.ForwardedEvent]:
    payloads = tx.run_sync(lambda uow: list(uow.session.execute(
        select(outbox.c.payload).where(outbox.c.topic == EVENTS_TOPIC).order_by(outbox.c.id))
        .scalars()))
    found = [orchestration_pb.ForwardedEvent.FromString(p) for p in payloads]
    return {f.event.message_id: f for f in found if f.event.message_id}


def as_stored(tx: Transactions, profile_id: str) -> tuple[dict[str, Any], list[str],
                                                          list[tuple[str, str]]]:
    states = tx.run_sync(lambda uow: stored_segments.profile_states(
        uow.session, WS, [profile_id]))
    return states[profile_id]


def state_of(message: orchestration_pb.ForwardedEvent) -> tuple[dict[str, Any], list[str],
                                                                 list[tuple[str, str]]]:
    return (dict(message.computed_traits),
            [s.removeprefix("segments/") for s in message.segments],
            [(i.type, i.value) for i in message.identifiers])


async def test_a_new_profile_is_forwarded_as_written_without_reading_it_back(
        tx: Transactions) -> None:
    await tx.run(lambda uow: segments.create_segment(
        uow, WS, "pros", "Pros", 'traits.plan == "pro"'))
    await tx.run(lambda uow: segments.create_segment(
        uow, WS, "buyers", "Buyers", "computed.orders >= 1"))
    with recorded(tx) as statements:
        outcomes = await ingest.ingest_events(tx, WS, [
            order("m1", ("user_id", "u1"), ("email", "zoe@example.com"),
                  ("anonymous_id", "a1"), total=12.5, traits={"plan": "pro"}),
            order("m2", ("user_id", "u2"), total=3.0)], SETTINGS, "")
    assert all(isinstance(o, Outcome) for o in outcomes), outcomes
    assert not [s for s in statements
                if READ_BACK in s or s.startswith(SEPARATE_READ_BACKS)], statements
    # The erased identifiers and the identifiers' owners are looked up in one statement.
    lookups = [s for s in statements if "erased_identifiers" in s or "FROM identifiers AS t" in s]
    assert len(lookups) == 1 and "UNION ALL" in lookups[0], lookups
    sent = forwarded(tx)
    zoe, other = (o.profile_id for o in outcomes if isinstance(o, Outcome))
    assert state_of(sent["m1"]) == as_stored(tx, zoe)
    assert state_of(sent["m2"]) == as_stored(tx, other)
    computed, member_of, linked = state_of(sent["m1"])
    assert (computed["orders"], computed["spent"], member_of) == (1, 12.5, ["buyers", "pros"])
    assert sorted(linked) == [("anonymous_id", "a1"), ("email", "zoe@example.com"),
                              ("user_id", "u1")]

    # An existing profile's state is read back, and forwarded as stored.
    [again] = await ingest.ingest_events(
        tx, WS, [order("m3", ("user_id", "u2"), total=4.5, traits={"plan": "pro"})],
        SETTINGS, "")
    assert isinstance(again, Outcome) and again.profile_id == other
    later = forwarded(tx)["m3"]
    assert state_of(later) == as_stored(tx, other)
    assert state_of(later)[:2] == ({"orders": 2, "spent": 7.5,
                                    "last_order": computed["last_order"]}, ["buyers", "pros"])


async def test_a_known_profile_is_read_back_and_a_batch_looked_up_in_one_statement_each(
        tx: Transactions) -> None:
    """A batch's first reads (erased identifiers, owners, message ids already applied) share
    one statement, and so do the reads of a known profile's state (memberships, identifiers,
    computed traits): what is forwarded and answered is still what the database holds."""
    await tx.run(lambda uow: segments.create_segment(
        uow, WS, "buyers", "Buyers", "computed.orders >= 1"))
    [first] = await ingest.ingest_events(
        tx, WS, [order("m1", ("user_id", "u1"), ("email", "ann@example.com"), total=2.0)],
        SETTINGS, "")
    assert isinstance(first, Outcome)
    with recorded(tx) as statements:
        again, repeat, other = await ingest.ingest_events(tx, WS, [
            order("m2", ("user_id", "u1"), total=3.0, traits={"plan": "pro"}),
            order("m1", ("user_id", "u1"), ("email", "ann@example.com"), total=2.0),
            order("m3", ("user_id", "u3"), total=1.0)], SETTINGS, "")
    assert isinstance(again, Outcome) and again.profile_id == first.profile_id
    assert repeat == Outcome(first.event_id, first.profile_id, duplicate=True)
    assert isinstance(other, Outcome) and not other.duplicate
    reads = [s for s in statements if s.startswith("SELECT")]
    # (The events computed traits count are read by profile, in a statement of their own.)
    looked_up = [s for s in reads if "erased_identifiers" in s
                 or s.startswith("SELECT events.message_id")]
    assert len(looked_up) == 1, looked_up
    assert " identifiers AS t " in looked_up[0] and " events AS t " in looked_up[0]
    read_back = [s for s in reads if READ_BACK in s or s.startswith(SEPARATE_READ_BACKS)]
    assert len(read_back) == 1 and READ_BACK in read_back[0], read_back
    sent = forwarded(tx)
    assert state_of(sent["m2"]) == as_stored(tx, first.profile_id)
    computed, member_of, linked = state_of(sent["m2"])
    assert (computed["orders"], member_of) == (2, ["buyers"])
    assert sorted(linked) == [("email", "ann@example.com"), ("user_id", "u1")]
