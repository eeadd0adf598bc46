"""An event that changes none of its profile's traits (the usual track event of a known person)
writes the profile's update time alone, in one statement built once whatever the number of
profiles (its ids one parameter): on both backends, and only in the event's workspace."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from identity_support import START, backend_transactions, recorded

from cjo_identity.domain.events import Event, EventType, parse_event
from cjo_identity.domain.ingest import Outcome
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer import ingest, profiles
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

SETTINGS = IdentitySettings()


@pytest.fixture
def tx(backend: Backend) -> Iterator[Transactions]:
    with backend_transactions(backend) as transactions:
        yield transactions


def track(message_id: str, user: str, traits: dict[str, Any] | None = None) -> Event:
    return parse_event(message_id=message_id, event_type=EventType.TRACK, name="page_viewed",
                       identifiers=(("user_id", user),), properties={"path": "/"},
                       traits=traits or {}, timestamp=START, source="web", now=START)


async def ingested(tx: Transactions, workspace: str, *events: Event) -> list[str]:
    outcomes = await ingest.ingest_events(tx, workspace, events, SETTINGS, "")
    assert all(isinstance(o, Outcome) for o in outcomes), outcomes
    return [o.profile_id for o in outcomes if isinstance(o, Outcome)]


async def test_an_event_without_traits_moves_the_update_time_alone(
        tx: Transactions, backend: Backend) -> None:
    ann, bob = await ingested(tx, "acme", track("a1", "ann", {"plan": "pro"}),
                              track("b1", "bob", {"plan": "free"}))
    [other] = await ingested(tx, "globex", track("o1", "ann", {"plan": "pro"}))
    tx.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    later = tx.clock.now()

    with recorded(tx) as statements:
        assert await ingested(tx, "acme", track("a2", "ann"), track("b2", "bob")) == [ann, bob]

    touched = [s for s in statements if s.startswith("UPDATE profiles SET update_time")]
    # One statement for both profiles, its ids one parameter (a JSON array on SQLite, an array
    # on PostgreSQL): the same text for any number of profiles, built once.
    assert len(touched) == 1, statements
    assert ("json_each" if backend.kind == "sqlite" else "ANY") in touched[0], touched

    def profile(workspace: str, profile_id: str) -> Any:
        return tx.run_sync(lambda uow: profiles.get_profile(uow, workspace, profile_id))

    for profile_id, plan in ((ann, "pro"), (bob, "free")):
        found = profile("acme", profile_id)
        assert found.update_time == later
        assert found.create_time == START
        assert {t: v.value for t, v in found.golden.traits.items()} == {"plan": plan}
    # Another workspace's profile of the same person is not touched.
    assert profile("globex", other).update_time == START
