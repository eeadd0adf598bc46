"""Identifiers of a person and how they are normalised, so that the same person written two
ways ("Ada@Example.com " and "ada@example.com") resolves to one profile."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cjo_platform.errors import Violations

MAX_IDENTIFIER_LENGTH = 256


class IdentifierType(StrEnum):
    # Declared from the strongest claim of identity to the weakest: resolution trusts a
    # user_id (the brand's own account id) over an email, and a cookie id least of all.
    USER_ID = "user_id"
    EMAIL = "email"
    PHONE = "phone"
    DEVICE_ID = "device_id"
    ANONYMOUS_ID = "anonymous_id"


_PRIORITY = {kind: rank for rank, kind in enumerate(IdentifierType)}
_BY_NAME = {kind.value: kind for kind in IdentifierType}
_TYPE_LIST = ", ".join(sorted(_BY_NAME))


@dataclass(frozen=True, order=True)
class Identifier:
    type: IdentifierType
    value: str

    @property
    def priority(self) -> int:
        """0 is the strongest."""
        return _PRIORITY[self.type]


def normalise_value(kind: IdentifierType, value: str) -> str:
    value = value.strip()
    # Mailbox local parts are case-sensitive in theory but never in practice; treating them
    # as such would split one person across profiles.
    return value.lower() if kind is IdentifierType.EMAIL else value


def parse_identifier(kind: str, value: str, problems: Violations,
                     field: str = "") -> Identifier | None:
    """The normalised identifier, or None after adding what is wrong to ``problems``.

    ``field`` prefixes the paths: ``identifiers[2]`` gives ``identifiers[2].type``."""
    prefix = f"{field}." if field else ""
    known = _BY_NAME.get(kind)
    value = normalise_value(known, value) if known else value.strip()
    ok = problems.check(known is not None, f"{prefix}type", f"must be one of {_TYPE_LIST}")
    ok &= problems.check(bool(value), f"{prefix}value", "is required")
    ok &= problems.check(len(value) <= MAX_IDENTIFIER_LENGTH, f"{prefix}value",
                         f"at most {MAX_IDENTIFIER_LENGTH} characters")
    return Identifier(known, value) if ok and known else None
