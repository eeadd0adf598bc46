"""A nested message whose encoding holds no suspect byte is cleared without a walk of its strings
and Structs, only its Timestamps and Durations checked (validation._scanned_check): the same
rules and the same violations, with the same paths, as a plain walk. Checked here against an
oracle written straight from the rules, on forwarded events (the items orchestration and
decisioning receive) built to be clean or to break one rule where the encoding's search cannot
see it (a time out of range) or where it can (NUL, NaN, a kindless Value, nesting)."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import descriptor_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2
from cjo.identity.v1 import consent_pb2, event_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_platform.limits import MAX_NESTING
from cjo_platform.rpc import validation

ITEM_DEPTH = 2  # a batch item sits in its request


def oracle(message: Message, depth: int = ITEM_DEPTH, path: str = "") -> dict[str, str]:
    """The violations of ``message`` read straight from the module's rules: every field
    visited, nothing cleared from bytes."""
    found: dict[str, str] = {}
    if depth > MAX_NESTING:
        return {path: validation.NESTING_RULE}

    def join(name: str) -> str:
        return f"{path}.{name}" if path else name

    def value(v: struct_pb2.Value, where: str, level: int) -> None:
        kind = v.WhichOneof("kind")
        if kind is None:
            found[where] = validation.NO_KIND_RULE
        elif kind == "string_value" and "\x00" in v.string_value:
            found[where] = validation.NUL_RULE
        elif kind == "number_value" and not math.isfinite(v.number_value):
            found[where] = validation.FINITE_RULE
        elif kind == "struct_value":
            struct(v.struct_value, where, level)
        elif kind == "list_value":
            listed(v.list_value, where, level)

    def struct(s: struct_pb2.Struct, where: str, level: int) -> None:
        if level + 1 > MAX_NESTING:
            found[where] = validation.NESTING_RULE
            return
        for key in s.fields:
            value(s.fields[key], f"{where}.{key}", level + 1)

    def listed(values: struct_pb2.ListValue, where: str, level: int) -> None:
        if level + 1 > MAX_NESTING:
            found[where] = validation.NESTING_RULE
            return
        for index, v in enumerate(values.values):
            value(v, f"{where}[{index}]", level + 1)

    for field, content in message.ListFields():
        where = join(field.name)
        items = list(enumerate(content)) if field.is_repeated else [(None, content)]
        for index, one in items:
            at = where if index is None else f"{where}[{index}]"
            if isinstance(one, str):
                if "\x00" in one:
                    found[at] = validation.NUL_RULE
            elif isinstance(one, struct_pb2.Struct):
                struct(one, at, depth)
            elif isinstance(one, timestamp_pb2.Timestamp):
                if not (validation.TIMESTAMP_MIN_SECONDS <= one.seconds
                        <= validation.TIMESTAMP_MAX_SECONDS
                        and 0 <= one.nanos <= validation.MAX_NANOS):
                    found[at] = validation.TIMESTAMP_RULE
            elif isinstance(one, Message):
                found.update(oracle(one, depth + 1, at))
    return found


def found(item: Message) -> dict[str, str]:
    return {v.field: v.description for v in validation.violations(item, depth=ITEM_DEPTH)}


def nested(levels: int, leaf: Any) -> struct_pb2.Struct:
    """Structs ``levels`` deep around ``leaf``, every key clean."""
    inner = struct_pb2.Struct(fields={"leaf": leaf})
    for _ in range(levels - 1):
        inner = struct_pb2.Struct(fields={"k": struct_pb2.Value(struct_value=inner)})
    return inner


def forwarded(properties: struct_pb2.Struct, *, seconds: int = 1_796_000_000, nanos: int = 0,
              consent_nanos: int = 0, identifier: str = "u1") -> pb.ForwardedEvent:
    event = event_pb2.Event(
        message_id="m-1", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up", source="web",
        identifiers=[event_pb2.Identifier(type="user_id", value=identifier)],
        timestamp=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    event.properties.CopyFrom(properties)
    item = pb.ForwardedEvent(
        event_id="e-1", profile_id="p-1", event=event,
        consents=[consent_pb2.Consent(topic="news", source="web",
                                      update_time=timestamp_pb2.Timestamp(seconds=1_700_000_000)),
                  consent_pb2.Consent(topic="offers", source="web",
                                      update_time=timestamp_pb2.Timestamp(
                                          seconds=1_700_000_001, nanos=consent_nanos))])
    item.computed_traits.SetInParent()
    return item


def plain(**values: str) -> struct_pb2.Struct:
    return struct_pb2.Struct(fields={k: struct_pb2.Value(string_value=v)
                                     for k, v in values.items()})


def test_a_clean_event_is_cleared_from_its_encoding_but_its_times_are_checked() -> None:
    # Only the timestamps are left to walk, through the fields that lead to one.
    event_times = [f for f, *_ in validation._time_plan(event_pb2.Event.DESCRIPTOR)]
    assert [f.name for f in event_times] == ["timestamp"]
    assert validation._levels_below(pb.ForwardedEvent.DESCRIPTOR) == 2  # event > properties
    item = forwarded(plain(path="/p"))
    assert not validation._suspect(item.event.SerializeToString())
    assert found(item) == {}
    # Times out of range leave no suspect byte, and are refused all the same.
    late = forwarded(plain(path="/p"), seconds=300_000_000_000)  # past 9999
    assert not validation._suspect(late.event.SerializeToString())
    assert found(late) == {"event.timestamp": validation.TIMESTAMP_RULE}
    odd = forwarded(plain(path="/p"), consent_nanos=1_000_000_000)
    assert not validation._suspect(odd.consents[1].SerializeToString())
    assert found(odd) == {"consents[1].update_time": validation.TIMESTAMP_RULE}


def test_what_leaves_a_suspect_byte_is_walked_and_named() -> None:
    assert found(forwarded(plain(path="/p"), identifier="u\x001")) == {
        "event.identifiers[0].value": validation.NUL_RULE}
    assert found(forwarded(plain(price="x"), seconds=-1)) == {}
    nan = plain(path="/p")
    nan.fields["price"].number_value = math.nan
    assert found(forwarded(nan)) == {"event.properties.price": validation.FINITE_RULE}


def test_nesting_of_clean_keys_below_a_cleared_message_is_still_bounded() -> None:
    # item (2) > event (3) > properties (4) ...: 29 Structs fit in 32, 30 do not.
    assert found(forwarded(nested(29, struct_pb2.Value(string_value="x")))) == {}
    deep = found(forwarded(nested(30, struct_pb2.Value(string_value="x"))))
    assert list(deep.values()) == [validation.NESTING_RULE]
    assert next(iter(deep)).startswith("event.properties.k")


def test_a_rendered_email_is_cleared_or_its_fault_named() -> None:
    # No Struct can be in it: its depth is known from its type, no key byte is counted.
    assert not validation._holds_containers(common_pb2.RenderedMessage.DESCRIPTOR)
    send = delivery_service_pb2.SendMessageRequest(idempotency_key="k1", journey_id="j1")
    send.recipient.address = "ada@example.com"
    send.content.content_key = "welcome"
    send.content.email.subject = "Welcome"
    send.content.email.html = "<p>" + "2*" * 40 + "</p>"
    assert found(send) == {}
    send.content.email.html += "\x00"
    assert found(send) == {"content.email.html": validation.NUL_RULE}


def test_a_type_that_can_hold_itself_is_always_walked() -> None:
    assert validation._levels_below(descriptor_pb2.DescriptorProto.DESCRIPTOR) is None


_text = st.text(alphabet=st.sampled_from("ab2*\x00\x7f\u00ff\u2603"), max_size=4)
_leaf = st.one_of(
    _text.map(lambda t: struct_pb2.Value(string_value=t)),
    st.sampled_from([0.0, 1.0, -2.5, 1e300, math.nan, math.inf, -math.inf]).map(
        lambda n: struct_pb2.Value(number_value=n)),
    st.just(struct_pb2.Value()),
    st.booleans().map(lambda b: struct_pb2.Value(bool_value=b)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=st.integers(1, 31), leaf=_leaf, key=st.text(alphabet="ab", min_size=1, max_size=3),
       value=_text, identifier=_text,
       seconds=st.sampled_from([0, 1_796_000_000, validation.TIMESTAMP_MAX_SECONDS,
                                validation.TIMESTAMP_MAX_SECONDS + 1, 300_000_000_000,
                                validation.TIMESTAMP_MIN_SECONDS - 1]),
       nanos=st.sampled_from([0, 5, validation.MAX_NANOS, validation.MAX_NANOS + 1]))
def test_the_same_violations_as_a_plain_reading_of_the_rules(
        levels: int, leaf: struct_pb2.Value, key: str, value: str, identifier: str,
        seconds: int, nanos: int) -> None:
    properties = nested(levels, leaf)
    properties.fields[key].string_value = value
    item = forwarded(properties, seconds=seconds, consent_nanos=nanos, identifier=identifier)
    expected = oracle(item)
    assert found(item) == expected
