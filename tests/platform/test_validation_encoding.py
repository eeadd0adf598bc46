"""Structs and lists are cleared from their encoding when it holds nothing that could be refused
(one search in C instead of a walk): whatever is refused still leaves a byte the search sees, so
a NaN without a single zero byte, an empty Value among clean strings and nesting made of clean
keys are refused all the same, with the same paths."""

from __future__ import annotations

import math
import struct

from google.protobuf import struct_pb2

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_platform.rpc import validation

FINITE = "must be a finite number (not NaN or Infinity)"


def _found(properties: struct_pb2.Struct) -> dict[str, str]:
    event = event_pb2.Event(message_id="m1", type=event_pb2.EVENT_TYPE_TRACK, name="viewed")
    event.properties.CopyFrom(properties)
    request = pb.IngestEventsRequest(events=[event])
    return {v.field: v.description for v in validation.violations(request)}


def _strings(**values: str) -> struct_pb2.Struct:
    return struct_pb2.Struct(fields={k: struct_pb2.Value(string_value=v)
                                     for k, v in values.items()})


def test_clean_strings_pass_and_are_cleared_without_a_walk() -> None:
    properties = _strings(path="/pricing", plan="pro", note="caf\u00e9 \u2603")
    assert validation._clean(properties, 3)
    assert _found(properties) == {}
    # A suspect byte that is no fault (DEL in a string) is walked, and passes.
    assert _found(_strings(path="a\x7fb")) == {}


def test_a_nan_whose_encoding_has_no_zero_byte_is_refused() -> None:
    for last in (0x7F, 0xFF):  # a NaN with a payload; the sign bit set or not
        nan = struct.unpack("<d", bytes([0x11] * 6 + [0xF8, last]))[0]
        assert math.isnan(nan)
        properties = _strings(path="/p")
        properties.fields["price"].number_value = nan
        assert b"\x00" not in properties.SerializeToString()
        assert _found(properties) == {"events[0].properties.price": FINITE}


def test_an_empty_value_among_clean_strings_is_refused() -> None:
    properties = _strings(path="/p")
    properties.fields["tags"].list_value.values.add(string_value="a")
    properties.fields["tags"].list_value.values.add()
    properties.fields["gone"].CopyFrom(struct_pb2.Value())
    assert _found(properties) == {"events[0].properties.tags[1]": validation.NO_KIND_RULE,
                                  "events[0].properties.gone": validation.NO_KIND_RULE}


def _nested(levels: int, *, lists: bool) -> struct_pb2.Struct:
    """Structs (or, with ``lists``, a Struct holding a list holding a Struct, and so on)
    ``levels`` containers deep, every key and leaf clean."""
    inner = _strings(leaf="x")
    made = 1
    while made < levels:
        value = struct_pb2.Value()
        if lists and made + 2 <= levels:
            value.list_value.values.add(struct_value=inner)
            made += 2
        else:
            value.struct_value.CopyFrom(inner)
            made += 1
        inner = struct_pb2.Struct(fields={"k": value})
    return inner


def test_nesting_of_clean_keys_is_still_bounded() -> None:
    # request (1) > event (2) > properties (3) ...: 30 containers fit in 32, 31 do not.
    for lists in (False, True):
        assert _found(_nested(30, lists=lists)) == {}
        ((field, description),) = _found(_nested(31, lists=lists)).items()
        assert description == validation.NESTING_RULE
        assert field.startswith("events[0].properties.k")
