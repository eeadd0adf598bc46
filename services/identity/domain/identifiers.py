"""Identifiers of a person and how they are normalised, so that the same person written two
ways ("Ada@Example.com " and "ada@example.com", "06 12 34 56 78" and "+33612345678") resolves
to one profile."""

from __future__ import annotations

import re
from typing import NamedTuple

import phonenumbers

from cjo_platform.errors import Violations

MAX_IDENTIFIER_LENGTH = 256
MAX_TYPE_LENGTH = 16
_TOO_LONG = f"at most {MAX_IDENTIFIER_LENGTH} characters"
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,15}$")

USER_ID = "user_id"
EMAIL = "email"
PHONE = "phone"
DEVICE_ID = "device_id"
ANONYMOUS_ID = "anonymous_id"
# From the strongest claim of identity to the weakest: the brand's own account id is trusted
# over an email, and a cookie id least of all. Workspaces may reorder and extend this.
BUILT_IN_TYPES = (USER_ID, EMAIL, PHONE, DEVICE_ID, ANONYMOUS_ID)


class Identifier(NamedTuple):
    """One identifier of a person, normalised. A tuple: made, hashed and sorted (by type, then
    value) in C, a few thousand times per ingest batch."""

    type: str
    value: str


def normalise_phone(value: str, region: str) -> str | None:
    """E.164 form of a phone number, or None when it is not a possible number."""
    try:
        number = phonenumbers.parse(value, region or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_identifier(kind: str, value: str, problems: Violations, field: str = "", *,
                     known_types: frozenset[str] = frozenset(BUILT_IN_TYPES),
                     phone_region: str = "") -> Identifier | None:
    """The normalised identifier, or None after adding what is wrong to ``problems``.

    ``field`` prefixes the paths: ``identifiers[2]`` gives ``identifiers[2].type``."""
    value = value.strip()
    # The paths and messages are built only for what is wrong: this runs for every identifier
    # of every event, and sorting the known types for a message nobody reads cost more than
    # the check.
    if kind not in known_types or not value or len(value) > MAX_IDENTIFIER_LENGTH:
        prefix = f"{field}." if field else ""
        if kind not in known_types:
            problems.add(f"{prefix}type", f"must be one of {', '.join(sorted(known_types))}")
        if not value:
            problems.add(f"{prefix}value", "is required")
        elif len(value) > MAX_IDENTIFIER_LENGTH:
            problems.add(f"{prefix}value", _TOO_LONG)
        return None
    if kind == EMAIL:
        # Mailbox local parts are case-sensitive in theory but never in practice; treating them
        # as such would split one person across profiles.
        value = value.lower()
        # Lower-casing can lengthen a value ("İ" becomes two characters): checked again, or one
        # event would overflow the column and fail its whole batch.
        if len(value) > MAX_IDENTIFIER_LENGTH:
            problems.add(f"{field}.value" if field else "value", _TOO_LONG)
            return None
    elif kind == PHONE:
        phone = normalise_phone(value, phone_region)
        if phone is None:
            hint = ("with a country code (+...)" if not phone_region
                    else f"in E.164 or a number of region {phone_region}")
            problems.add(f"{field}.value" if field else "value",
                         f"is not a phone number; write it {hint}")
            return None
        value = phone
    return Identifier(kind, value)
