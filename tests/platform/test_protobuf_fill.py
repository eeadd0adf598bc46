"""The fast fills of well-known types write what the protobuf library's own methods write:
``fill_struct`` what ``Struct.update`` does, ``set_timestamp`` what ``FromDatetime`` does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from cjo_platform.protobuf import dict_to_struct, fill_struct, set_timestamp, to_timestamp

VALUES: list[dict[str, Any]] = [
    {},
    {"email": "ann@example.com", "first_name": "Ann", "empty": "", "unicode": "Zoë ✓"},
    {"yes": True, "no": False, "zero": 0, "int": 42, "neg": -7, "big": 2**60,
     "float": 2.5, "tiny": 1e-300},
    {"none": None, "list": [1, "a", None, True, {"k": [2.5]}], "tuple": (1, 2),
     "nested": {"a": {"b": {"c": "d"}}, "n": None}},
]


@pytest.mark.parametrize("value", VALUES)
def test_fill_struct_writes_what_update_writes(value: dict[str, Any]) -> None:
    expected = struct_pb2.Struct()
    expected.update(value)
    filled = struct_pb2.Struct()
    fill_struct(filled, value)
    assert filled == expected
    assert filled.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True)
    assert dict_to_struct(value) == expected


def test_fill_struct_refuses_what_update_refuses() -> None:
    with pytest.raises(ValueError):
        struct_pb2.Struct().update({"bad": {1, 2}})
    with pytest.raises(ValueError):
        fill_struct(struct_pb2.Struct(), {"bad": {1, 2}})


@pytest.mark.parametrize("moment", [
    datetime(2026, 12, 6, 17, 0, 0, 123456, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 3, 29, 2, 30, 0, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 3, 29, 2, 30, 0, 5, tzinfo=timezone(timedelta(hours=-8))),
])
def test_set_timestamp_writes_what_from_datetime_writes(moment: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    stamped = timestamp_pb2.Timestamp()
    set_timestamp(stamped, moment)
    assert (stamped.seconds, stamped.nanos) == (expected.seconds, expected.nanos)
    assert to_timestamp(moment) == expected


def test_set_timestamp_refuses_what_from_datetime_refuses() -> None:
    before_year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    # The library's time tuple overflows; the distance to the epoch is checked against the range.
    with pytest.raises(OverflowError):
        timestamp_pb2.Timestamp().FromDatetime(before_year_one)
    with pytest.raises(ValueError):
        set_timestamp(timestamp_pb2.Timestamp(), before_year_one)
