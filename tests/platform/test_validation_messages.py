"""A batch item whose encoding holds nothing that could be refused (a forwarded event of
strings, with its empty computed traits) is cleared without a walk: one serialization, a few
byte searches and its Timestamps read by their fields. Whatever would be refused still
leaves a byte those searches see, or is a time they read, and is then found by the walk with
the same path."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2, event_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_platform.errors import InvalidArgument
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc import validation


def forwarded() -> pb.ForwardedEvent:
    identifiers = [event_pb2.Identifier(type="email", value="ada@example.com")]
    item = pb.ForwardedEvent(
        event_id="ev_1", profile_id="p_1", traceparent=f"00-{'a' * 32}-{'b' * 16}-01",
        event=event_pb2.Event(
            message_id="m1", type=event_pb2.EVENT_TYPE_TRACK, name="viewed",
            identifiers=identifiers, traits=dict_to_struct({"first_name": "Ada"}),
            properties=dict_to_struct({"path": "/pricing"}),
            timestamp=timestamp_pb2.Timestamp(seconds=1_796_000_000)),
        profile_traits=dict_to_struct({"first_name": "Ada"}),
        consents=[consent_pb2.Consent(
            channel=common_pb2.CHANNEL_EMAIL, topic="news",
            state=consent_pb2.CONSENT_STATE_SUBSCRIBED,
            update_time=timestamp_pb2.Timestamp(seconds=1_790_000_000))],
        identifiers=identifiers)
    item.computed_traits.SetInParent()  # identity sets it, empty or not
    return item


def found(item: pb.ForwardedEvent) -> dict[str, str]:
    try:
        validation.check_item(item)
    except InvalidArgument as refused:
        return {v.field: v.description for v in refused.violations}
    return {}


def test_a_clean_forwarded_event_is_cleared_without_a_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_walk(*args: Any) -> None:
        raise AssertionError("walked")

    monkeypatch.setattr(validation, "_walk", no_walk)
    # Tried afresh, whatever items of this type the tests before found (walked at once after
    # several that could not be cleared).
    monkeypatch.setattr(validation, "_clearings", {})
    for _ in range(2 * validation.MISSES_BEFORE_WALKING):
        validation.check_item(forwarded())


def _nul_in_properties(item: pb.ForwardedEvent) -> None:
    item.event.properties.fields["path"].string_value = "/a\x00b"


def _late_timestamp(item: pb.ForwardedEvent) -> None:
    item.event.timestamp.seconds = validation.TIMESTAMP_MAX_SECONDS + 1


def _consent_nanos(item: pb.ForwardedEvent) -> None:
    item.consents[0].update_time.nanos = validation.MAX_NANOS + 1


def _empty_value(item: pb.ForwardedEvent) -> None:
    item.profile_traits.fields["gone"].CopyFrom(struct_pb2.Value())


def _nan_trait(item: pb.ForwardedEvent) -> None:
    item.event.traits.fields["score"].number_value = float("nan")


def _nul_identifier(item: pb.ForwardedEvent) -> None:
    item.identifiers[0].value = "a\x00"


@pytest.mark.parametrize(("spoil", "field", "rule"), [
    (_nul_in_properties, "event.properties.path", validation.NUL_RULE),
    (_late_timestamp, "event.timestamp", validation.TIMESTAMP_RULE),
    (_consent_nanos, "consents[0].update_time", validation.TIMESTAMP_RULE),
    (_empty_value, "profile_traits.gone", validation.NO_KIND_RULE),
    (_nan_trait, "event.traits.score", validation.FINITE_RULE),
    (_nul_identifier, "identifiers[0].value", validation.NUL_RULE),
])
def test_what_would_be_refused_is_found_with_its_path(spoil: Any, field: str, rule: str) -> None:
    for _ in range(3):  # also after clean ones cleared, and between them
        assert found(forwarded()) == {}
        item = forwarded()
        spoil(item)
        assert found(item) == {field: rule}


def test_a_clean_struct_nested_through_the_event_is_still_bounded() -> None:
    # item (2) > event (3) > properties (4) ...: 29 containers fit in 32, 30 do not.
    for levels, refused in ((29, False), (30, True)):
        inner = dict_to_struct({"leaf": "x"})
        for _ in range(levels - 1):
            outer = struct_pb2.Struct()
            outer.fields["k"].struct_value.CopyFrom(inner)
            inner = outer
        item = forwarded()
        item.event.properties.CopyFrom(inner)
        problems = found(item)
        assert bool(problems) == refused
        assert all(p.startswith("event.properties.k") and d == validation.NESTING_RULE
                   for p, d in problems.items())
