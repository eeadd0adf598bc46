"""New ids of 32 hex digits (identity's events, profiles and clusters): what uuid4().hex gives,
a version-4 RFC 4122 UUID, never twice."""

from __future__ import annotations

import uuid

from cjo_platform.ids import new_hex_id


def test_a_new_hex_id_is_a_random_version_4_uuid() -> None:
    ids = [new_hex_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert len(value) == 32 and value == value.lower()
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # Every other bit varies (random): no digit but the version's is fixed across the ids.
    fixed = [i for i in range(32) if len({value[i] for value in ids}) == 1]
    assert fixed == [12], fixed
