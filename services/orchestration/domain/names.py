"""Resource names (AIP-122): `journeys/{journey_id}`,
`journeys/{journey_id}/enrollments/{enrollment_id}` and
`journeys/{journey_id}/occurrences/{occurrence_id}`."""

from __future__ import annotations

import re
from datetime import UTC, datetime

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


ANY_JOURNEY = "journeys/-"
"""The parent of a listing across every journey (AIP-159); journey ids are made by the
service and are never "-"."""


def parse_journey_parent(name: str, field: str = "parent") -> str | None:
    """The journey of a listing's parent, or ``None`` for :data:`ANY_JOURNEY`."""
    return None if name == ANY_JOURNEY else parse_journey_name(name, field)


def parse_enrollment_name(name: str, field: str = "name") -> tuple[str, str]:
    parts = name.split("/")
    if (len(parts) != 4 or parts[0] != "journeys" or parts[2] != "enrollments"
            or not _segment(parts[1]) or not _segment(parts[3])):
        raise InvalidArgument.one(
            field, "must be journeys/{journey_id}/enrollments/{enrollment_id}")
    return parts[1], parts[3]


# A scheduled occurrence is keyed by (journey version, fire time); its id spells both out, so a
# name maps onto the primary key without a lookup table. Microseconds appear only when an `at`
# schedule named them.
_OCCURRENCE_ID = re.compile(r"v([1-9][0-9]{0,17})-([0-9]{8}T[0-9]{6})(?:\.([0-9]{6}))?Z")


def occurrence_id(journey_version: int, fire_time: datetime) -> str:
    when = fire_time.astimezone(UTC)
    fraction = f".{when.microsecond:06d}" if when.microsecond else ""
    return f"v{journey_version}-{when:%Y%m%dT%H%M%S}{fraction}Z"


def occurrence_name(journey_id: str, journey_version: int, fire_time: datetime) -> str:
    return f"journeys/{journey_id}/occurrences/{occurrence_id(journey_version, fire_time)}"


def parse_occurrence_name(name: str, field: str = "name") -> tuple[str, int, datetime]:
    """(journey id, journey version, fire time) of an occurrence's name."""
    parts = name.split("/")
    found = _OCCURRENCE_ID.fullmatch(parts[3]) if len(parts) == 4 else None
    try:
        if (found is None or parts[0] != "journeys" or parts[2] != "occurrences"
                or not _segment(parts[1])):
            raise ValueError(name)
        fire_time = datetime.strptime(found.group(2), "%Y%m%dT%H%M%S").replace(
            microsecond=int(found.group(3) or 0), tzinfo=UTC)
    except ValueError:  # also a well-formed but impossible date, e.g. month 13
        raise InvalidArgument.one(
            field, "must be journeys/{journey_id}/occurrences/{occurrence_id}, the id as "
                   "listed, e.g. v2-20260309T080000Z") from None
    return parts[1], int(found.group(1)), fire_time
