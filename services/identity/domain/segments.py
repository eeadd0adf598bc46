"""Segments: CEL conditions over a profile's traits, computed traits and consent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cjo_identity.domain.golden import Golden, trait_values
from cjo_identity.domain.settings import CHANNELS
from cjo_platform.cel import Expression, compile_expression, load_expression
from cjo_platform.errors import Violations
from cjo_platform.ids import SEGMENT_ID_RULE, is_segment_id

VARIABLES = ("traits", "computed", "consent")
ENTERED = "segment_entered"
EXITED = "segment_exited"
PROFILE_DELETED = "profile_deleted"
PROFILE_MERGED = "profile_merged"


@dataclass(frozen=True)
class Segment:
    segment_id: str
    display_name: str
    condition: str
    create_time: datetime

    @property
    def expression(self) -> Expression:
        # Saved earlier: evaluated as it is, never refused by a check added since.
        return load_expression(self.condition, "segment.condition")


def compile_condition(source: str, field: str) -> Expression:
    """Compiled (and cached) condition; INVALID_ARGUMENT with the error's position."""
    return compile_expression(source, field, VARIABLES)


def check_segment(segment: Segment) -> None:
    problems = Violations()
    problems.check(is_segment_id(segment.segment_id), "segment.segment_id", SEGMENT_ID_RULE)
    problems.check(len(segment.display_name) <= 200, "segment.display_name",
                   "at most 200 characters")
    problems.raise_if_any()
    compile_condition(segment.condition, "segment.condition")


def activation(golden: Golden, computed: Mapping[str, Any]) -> dict[str, Any]:
    # Every channel is present, so `consent.email == "unknown"` works without has().
    consent: dict[str, str] = dict.fromkeys(CHANNELS, "unknown")
    for (channel, topic), record in golden.consents.items():
        key = f"{channel}/{topic}" if topic else channel
        consent[key] = "subscribed" if record.subscribed else "unsubscribed"
    return {"traits": trait_values(golden.traits), "computed": dict(computed),
            "consent": consent}
