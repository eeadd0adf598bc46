"""Conversions between protobuf well-known types and plain Python values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A Timestamp's range (0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z), as FromDatetime checks it.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    set_timestamp(ts, value.astimezone(UTC))
    return ts


def set_timestamp(ts: timestamp_pb2.Timestamp, value: datetime) -> None:
    """``ts.FromDatetime(value)`` for a UTC ``value`` (callers convert first, as
    :func:`to_timestamp` does: a naive value is refused, an offset is not folded in as the
    library folds it), from its distance to the epoch instead of a UTC time tuple: ~0.5 us
    instead of ~2.4, for a field set on every forwarded event and every timestamp of a
    response."""
    delta = value - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise ValueError(f"{value!r} is outside the range of a Timestamp (years 1 to 9999 UTC)")
    ts.seconds = seconds
    ts.nanos = delta.microseconds * 1000


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    """The moment as an aware UTC datetime (nanoseconds truncated to microseconds): what
    ``ts.ToDatetime(tzinfo=UTC)`` gives, without its range check's and time zone conversion's
    Python calls for a timestamp in range (every event and fact goes through here); one out of
    range gets the library's own error."""
    seconds, nanos = ts.seconds, ts.nanos
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos <= 999_999_999):
        moment: datetime = ts.ToDatetime(tzinfo=UTC)
        return moment
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python values. Struct numbers are doubles; whole ones become ints, so a
    template shows ``42``, not ``42.0``, and JSON columns keep integers as integers."""
    fields = struct.fields
    # By key: the map's ``items()`` is collections.abc's, a Python generator over the keys
    # that looks each up again (~25% of a small Struct's conversion, most of an empty one's).
    return {key: _plain(fields[key]) for key in fields} if fields else {}


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return None


def dict_to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if value:
        fill_struct(struct, value)
    return struct


def fill_struct(struct: struct_pb2.Struct, value: Mapping[str, Any]) -> None:
    """``struct.update(value)``: the same fields, with strings, booleans and numbers set
    directly (``update`` calls a Python function per key that tries each type in turn: ~30%
    more per Struct of a few scalar traits); nested values, ``None`` and anything else go
    through ``update`` itself, so every value ends up as it would."""
    fields = struct.fields
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            fields[key].string_value = item
        elif kind is bool:
            fields[key].bool_value = item
        elif kind is int or kind is float:
            fields[key].number_value = item
        else:
            struct.update({key: item})
