"""Computed traits cannot poison ingest: windows are bounded when saved (INVALID_ARGUMENT naming
the field), the date math of windows saved before the bound never raises, and sums that
overflow are clamped so PostgreSQL's JSON can store them. Through the real gRPC server, on
both backends."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from identity_support import START, Identity, event, rpc_error

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_settings_pb2 as settings_pb2
from cjo_identity.adapters.settings import save_settings
from cjo_identity.domain.computed import (
    MAX_WINDOW,
    Aggregation,
    ComputedTrait,
    EventFact,
    compute,
    earliest_needed,
    window_start,
)
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.rpc.status import field_violations
from cjo_platform.secret_box import SecretBox

Metadata = tuple[tuple[str, str], ...]
YEAR = 365 * 86400
FIELD = "settings.computed_traits[0].window"


def test_window_date_math_never_raises() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert window_start(now, timedelta(days=30)) == now - timedelta(days=30)
    assert window_start(now, None) is None
    # Reaching before year 1: the whole history.
    assert window_start(now, timedelta(days=3000 * 365)) is None
    assert window_start(now, timedelta.max) is None
    huge = ComputedTrait("n", Aggregation.COUNT, "order", window=timedelta(days=3000 * 365))
    assert earliest_needed([huge], now) is None
    old = EventFact("order", {}, datetime(1, 1, 2, tzinfo=UTC))
    assert compute([huge], [old], now) == {"n": 1}


def test_sums_are_finite() -> None:
    total = ComputedTrait("ltv", Aggregation.SUM, "order", "revenue")
    now = datetime(2026, 3, 1, tzinfo=UTC)
    facts = [EventFact("order", {"revenue": value}, now)
             for value in (1e308, 1e308, float("inf"), float("nan"))]
    assert compute([total], facts, now) == {"ltv": sys.float_info.max}
    negative = [EventFact("order", {"revenue": -1e308}, now)] * 2
    assert compute([total], negative, now) == {"ltv": -sys.float_info.max}


def trait(window: duration_pb2.Duration | None = None,
          aggregation: int = settings_pb2.COMPUTED_AGGREGATION_COUNT) -> settings_pb2.ComputedTrait:
    return settings_pb2.ComputedTrait(name="orders", aggregation=aggregation,
                                      event_name="order_completed", property="revenue",
                                      window=window)


async def update(identity: Identity, metadata: Metadata,
                 *traits: settings_pb2.ComputedTrait) -> pb.UpdateIdentitySettingsResponse:
    return await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=settings_pb2.IdentitySettings(computed_traits=traits)), metadata=metadata)


@pytest.mark.parametrize(("seconds", "nanos", "says"), [
    (3000 * YEAR, 0, "at most 10 years"),
    (int(MAX_WINDOW.total_seconds()) + 1, 0, "at most 10 years"),
    # Outside what a Duration may hold: refused by the shared validation, naming the field.
    (9223372036854775807, 0, ""),
    (-86400, 0, "positive"),
    (86400, 500, "whole seconds"),
])
async def test_a_window_outside_its_range_is_invalid_argument(
        identity: Identity, seconds: int, nanos: int, says: str) -> None:
    acme = await identity.new_workspace("acme")
    error = await rpc_error(update(identity, acme, trait(
        duration_pb2.Duration(seconds=seconds, nanos=nanos))))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in field_violations(rpc_status.from_call(error))[FIELD]
    reply = await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                      metadata=acme)
    assert not reply.settings.computed_traits  # nothing was written


async def test_ten_years_is_accepted(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    reply = await update(identity, acme, trait(duration_pb2.Duration(
        seconds=int(MAX_WINDOW.total_seconds()))))
    assert reply.settings.computed_traits[0].window.seconds == MAX_WINDOW.total_seconds()


async def test_a_window_saved_before_the_bound_does_not_stop_ingest(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    # As an older release stored it: 3,000 years.
    stored = IdentitySettings(computed_traits=(ComputedTrait(
        "orders", Aggregation.COUNT, "order_completed", window=timedelta(days=3000 * 365)),))

    def save() -> None:
        with identity.app.db.transaction() as session:
            save_settings(session, "acme", stored, START, SecretBox([]), secret_changed=True)
    await identity.app.db.run(save)
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event(f"o{n}", ("user_id", "u1"), name="order_completed",
              at=START - timedelta(days=400 * n)) for n in range(3)]), metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 0, 0]
    profile = await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{reply.results[0].profile_id}"), metadata=acme)
    assert profile.profile.computed_traits["orders"] == 3


async def test_a_sum_that_overflows_is_stored_clamped(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    await update(identity, acme, trait(aggregation=settings_pb2.COMPUTED_AGGREGATION_SUM))
    orders = [event(f"o{n}", ("user_id", "u1"), name="order_completed") for n in range(2)]
    for order in orders:
        order.properties.update({"revenue": 1e308})
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=orders),
                                               metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 0]
    profile = await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{reply.results[0].profile_id}"), metadata=acme)
    assert profile.profile.computed_traits["orders"] == sys.float_info.max
