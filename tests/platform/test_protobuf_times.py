"""``from_timestamp`` (every event's and fact's time) gives exactly what the library's
``Timestamp.ToDatetime(tzinfo=UTC)`` gives, and fails as it fails out of range."""

from __future__ import annotations

from datetime import UTC

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from cjo_platform.protobuf import from_timestamp

MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799


def _library(ts: timestamp_pb2.Timestamp) -> object:
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except Exception as exc:  # the error the library raises, compared by type
        return type(exc)


def _ours(ts: timestamp_pb2.Timestamp) -> object:
    try:
        return from_timestamp(ts)
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize(("seconds", "nanos"), [
    (0, 0), (1_700_000_000, 123_456_789), (1_700_000_000, 999), (1_700_000_000, 999_999_999),
    (MIN_SECONDS, 0), (MAX_SECONDS, 999_999_999), (-1, 1), (-1, 999_999_999),
    (MIN_SECONDS - 1, 0), (MAX_SECONDS + 1, 0), (0, -1), (0, 1_000_000_000), (5, -999),
])
def test_edges_are_read_as_the_library_reads_them(seconds: int, nanos: int) -> None:
    ts = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    ours, theirs = _ours(ts), _library(ts)
    assert ours == theirs
    if not isinstance(theirs, type):
        assert ours.tzinfo is UTC  # type: ignore[attr-defined]


@given(st.integers(MIN_SECONDS - 10, MAX_SECONDS + 10),
       st.integers(-1_000_000_001, 1_000_000_001))
def test_any_timestamp_is_read_as_the_library_reads_it(seconds: int, nanos: int) -> None:
    ts = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert _ours(ts) == _library(ts)
