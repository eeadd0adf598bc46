"""A number a CSV import sends as a string ("19.99") counts the same in a SUM computed trait as
in a conversion's revenue (review hident): one parser reads both, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from identity_support import Identity, event

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_settings_pb2 as settings_pb2
from cjo_identity.domain.computed import Aggregation, ComputedTrait, EventFact, compute
from cjo_identity.domain.conversions import ConversionEvent, value_of
from cjo_identity.domain.numbers import parse_number


@pytest.mark.parametrize("value", [19.99, 5, "19.99", " 5 ", "1e3", "abc", "", True, None,
                                   "nan", "inf", [1]])
def test_a_sum_reads_a_property_as_revenue_does(value: object) -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    total = ComputedTrait("spent", Aggregation.SUM, "order_completed", "total")
    summed = compute([total], [EventFact("order_completed", {"total": value}, now)], now)
    revenue = value_of(ConversionEvent("order_completed", "total"), {"total": value}).revenue
    assert summed == {"spent": pytest.approx(revenue)}


@pytest.mark.parametrize("value", ["\uff11\uff12", "\u0663", "1_000", "1,000", "0x10", "+", ".",
                                   "1e"])
def test_only_ascii_decimal_strings_are_numbers(value: str) -> None:
    # float() reads "1_000" and other scripts' digits (review rimport): a CSV's "1,000" counted
    # 0 while "1_000" counted 1,000.
    assert parse_number(value) is None


@pytest.mark.parametrize(("value", "number"), [("19.99", 19.99), (" -5 ", -5.0), ("1e3", 1e3),
                                               (".5", 0.5), ("5.", 5.0), ("+2", 2.0)])
def test_ascii_decimal_strings_are_numbers(value: str, number: float) -> None:
    assert parse_number(value) == number


async def test_csv_numbers_are_summed(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=settings_pb2.IdentitySettings(computed_traits=[settings_pb2.ComputedTrait(
            name="spent", aggregation=settings_pb2.COMPUTED_AGGREGATION_SUM,
            event_name="order_completed", property="total")])), metadata=acme)
    orders = [event(f"o{n}", ("user_id", "u1"), name="order_completed") for n in range(3)]
    for order, total in zip(orders, ("19.99", "5", 1), strict=True):
        order.properties.update({"total": total})
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=orders),
                                               metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 0, 0]
    profile = await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{reply.results[0].profile_id}"), metadata=acme)
    assert profile.profile.computed_traits["spent"] == pytest.approx(25.99)
