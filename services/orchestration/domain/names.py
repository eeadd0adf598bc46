"""Resource names (AIP-122): `journeys/{journey_id}` and
`journeys/{journey_id}/enrollments/{enrollment_id}`."""

from __future__ import annotations

from cjo_platform.errors import InvalidArgument
from cjo_platform.limits import MAX_ID_LENGTH


def _segment(value: str) -> bool:
    return bool(value) and "/" not in value and len(value) <= MAX_ID_LENGTH


def journey_name(journey_id: str) -> str:
    return f"journeys/{journey_id}"


def enrollment_name(journey_id: str, enrollment_id: str) -> str:
    return f"journeys/{journey_id}/enrollments/{enrollment_id}"


def parse_journey_name(name: str, field: str = "name") -> str:
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "journeys" or not _segment(parts[1]):
        raise InvalidArgument.one(field, "must be journeys/{journey_id}")
    return parts[1]


def parse_enrollment_name(name: str, field: str = "name") -> tuple[str, str]:
    parts = name.split("/")
    if (len(parts) != 4 or parts[0] != "journeys" or parts[2] != "enrollments"
            or not _segment(parts[1]) or not _segment(parts[3])):
        raise InvalidArgument.one(
            field, "must be journeys/{journey_id}/enrollments/{enrollment_id}")
    return parts[1], parts[3]
