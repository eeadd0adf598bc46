"""A workspace's identity rules: which identifier types exist and how strong each is, limits
and blocked values that keep the identity graph from collapsing, trait survivorship and the
consent each channel assumes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property

import phonenumbers

from cjo_identity.domain.computed import ComputedTrait, check_computed
from cjo_identity.domain.conversions import (
    ConversionEvent,
    check_conversions,
    conversion_index,
)
from cjo_identity.domain.identifiers import BUILT_IN_TYPES, TYPE_NAME, USER_ID, Identifier
from cjo_identity.domain.patterns import NESTED_REPETITION, nested_repetition
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.profiles import CONSENT_CHANNELS

CHANNELS = CONSENT_CHANNELS
MAX_RULES = 100
MAX_PATTERN_LENGTH = 256


class Survivorship(StrEnum):
    LATEST = "latest"
    FIRST = "first"
    SOURCE_PRIORITY = "source_priority"
    UNION = "union"


@dataclass(frozen=True)
class TypeRule:
    type: str
    limit: int = 0  # 0: no limit
    blocked_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class TraitRule:
    trait: str
    survivorship: Survivorship = Survivorship.LATEST
    source_priority: tuple[str, ...] = ()


# An HMAC key a brand's backend holds: long enough not to be guessed.
MIN_SECRET_LENGTH = 32
MAX_SECRET_LENGTH = 256
SEALED_PREFIX = "enc:"


@dataclass(frozen=True)
class IdentitySettings:
    default_phone_region: str = ""
    identifier_types: tuple[TypeRule, ...] = (TypeRule(USER_ID, limit=1),)
    trait_rules: tuple[TraitRule, ...] = ()
    consent_opt_in: Mapping[str, bool] = field(default_factory=lambda: {"sms": True})
    computed_traits: tuple[ComputedTrait, ...] = ()
    conversion_events: tuple[ConversionEvent, ...] = ()
    # Identity verification of publishable keys' events (domain/verification.py).
    verification_required: bool = False
    # Never in a repr (so never in a log line); stored sealed (adapters/settings.py).
    verification_secret: str = field(default="", repr=False)
    # Why the stored secret could not be opened (no configured key decrypts it): verification
    # then fails until a key opens it again or a new secret is set; "" when it opened.
    verification_secret_error: str = ""

    @cached_property
    def type_order(self) -> tuple[str, ...]:
        """Every known type, strongest first: the listed ones, then the other built-ins."""
        listed = tuple(rule.type for rule in self.identifier_types)
        return listed + tuple(t for t in BUILT_IN_TYPES if t not in listed)

    @cached_property
    def known_types(self) -> frozenset[str]:
        return frozenset(self.type_order)

    @cached_property
    def _rank(self) -> dict[str, int]:
        return {kind: rank for rank, kind in enumerate(self.type_order)}

    @cached_property
    def limits(self) -> dict[str, int]:
        return {rule.type: rule.limit for rule in self.identifier_types if rule.limit > 0}

    @cached_property
    def _blocked(self) -> dict[str, re.Pattern[str]]:
        return {rule.type: re.compile("|".join(f"(?:{p})" for p in rule.blocked_values))
                for rule in self.identifier_types if rule.blocked_values}

    @cached_property
    def conversions(self) -> dict[str, ConversionEvent]:
        """The conversion events by event name."""
        return conversion_index(self.conversion_events)

    @cached_property
    def _trait_rules(self) -> dict[str, TraitRule]:
        return {rule.trait: rule for rule in self.trait_rules}

    def strength(self, identifier: Identifier) -> tuple[int, str, str]:
        """Sort key: the strongest identifier sorts first; ties by value, never by arrival."""
        return (self._rank.get(identifier.type, len(self._rank)), identifier.type,
                identifier.value)

    @cached_property
    def blocks_nothing(self) -> bool:
        """No identifier type has blocked values (the usual workspace)."""
        return not self._blocked

    def is_blocked(self, identifier: Identifier) -> bool:
        pattern = self._blocked.get(identifier.type)
        return pattern is not None and pattern.fullmatch(identifier.value) is not None

    def trait_rule(self, trait: str) -> TraitRule:
        return self._trait_rules.get(trait) or TraitRule(trait)

    def set_trait_rule(self, trait: str) -> TraitRule | None:
        """The rule the workspace set for ``trait``; None: the default (latest wins), with no
        rule built for it (this runs per trait of every event)."""
        return self._trait_rules.get(trait)

    def opt_in(self, channel: str) -> bool:
        return self.consent_opt_in.get(channel, False)


def check_settings(settings: IdentitySettings,
                   channels: Sequence[str | None] = ()) -> None:
    """INVALID_ARGUMENT naming every bad field. ``channels`` are the consent defaults' channels
    as sent (None for one that is not a known channel)."""
    problems = Violations()
    secret = settings.verification_secret
    problems.check(not secret or MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH,
                   "settings.identity_verification.secret",
                   f"must have {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters")
    # Stored values with this prefix are encrypted ones (cjo_platform.secret_box).
    problems.check(not secret.startswith(SEALED_PREFIX), "settings.identity_verification.secret",
                   f"must not begin with {SEALED_PREFIX!r}")
    region = settings.default_phone_region
    problems.check(not region or region in phonenumbers.SUPPORTED_REGIONS,
                   "settings.default_phone_region",
                   "must be an ISO 3166-1 alpha-2 region code such as FR or US")
    problems.check(len(settings.identifier_types) <= MAX_RULES, "settings.identifier_types",
                   f"at most {MAX_RULES} types")
    seen: set[str] = set()
    for index, rule in enumerate(settings.identifier_types):
        path = f"settings.identifier_types[{index}]"
        problems.check(bool(TYPE_NAME.fullmatch(rule.type)), f"{path}.type",
                       "must be 1 to 16 lower-case letters, digits or underscores, "
                       "starting with a letter")
        problems.check(rule.type not in seen, f"{path}.type", "is listed twice")
        seen.add(rule.type)
        problems.check(rule.limit >= 0, f"{path}.limit", "must be 0 (no limit) or more")
        for n, pattern in enumerate(rule.blocked_values):
            where = f"{path}.blocked_values[{n}]"
            if not problems.check(0 < len(pattern) <= MAX_PATTERN_LENGTH, where,
                                  f"must be 1 to {MAX_PATTERN_LENGTH} characters"):
                continue
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.add(where, f"is not a valid regular expression: {exc}")
                continue
            problems.check(not nested_repetition(pattern), where, NESTED_REPETITION)
    problems.check(len(settings.trait_rules) <= MAX_RULES, "settings.trait_rules",
                   f"at most {MAX_RULES} rules")
    traits: set[str] = set()
    for index, trait_rule in enumerate(settings.trait_rules):
        path = f"settings.trait_rules[{index}]"
        problems.check(bool(trait_rule.trait) and len(trait_rule.trait) <= 128,
                       f"{path}.trait", "must be 1 to 128 characters")
        problems.check(trait_rule.trait not in traits, f"{path}.trait", "is listed twice")
        traits.add(trait_rule.trait)
        problems.check(
            trait_rule.survivorship is not Survivorship.SOURCE_PRIORITY
            or bool(trait_rule.source_priority), f"{path}.source_priority",
            "is required for source priority")
    check_computed(settings.computed_traits, problems, "settings.computed_traits")
    check_conversions(settings.conversion_events, problems, "settings.conversion_events")
    for index, channel in enumerate(channels):
        problems.check(channel in CHANNELS, f"settings.consent_defaults[{index}].channel",
                       f"must be one of {', '.join(CHANNELS)}")
    problems.raise_if_any()


def keep_secret(wanted: IdentitySettings, current: IdentitySettings) -> IdentitySettings:
    """``wanted`` as saved: an update that leaves the verification secret empty keeps the
    current one (GetIdentitySettings never returns it, so a read-modify-write sends none).
    Requiring verification needs a secret."""
    if not wanted.verification_secret:
        wanted = replace(wanted, verification_secret=current.verification_secret,
                         verification_secret_error=current.verification_secret_error)
    # One that cannot be opened here is still set (and kept as it is stored).
    if wanted.verification_required and not (wanted.verification_secret
                                             or wanted.verification_secret_error):
        raise InvalidArgument.one("settings.identity_verification.secret",
                                  "is required to require identity verification")
    return wanted
