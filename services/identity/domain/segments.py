"""Segments: CEL conditions over a profile's traits, computed traits and consent.

A condition is the customer's code run on the customer's data, so its failures are expected and
must stay its own: evaluating a segment for a profile gives a :class:`Verdict` (member or not,
or the error), never an exception. Errors are counted per segment (:class:`Health`); after
:data:`INVALID_AFTER` consecutive ones the segment is marked INVALID and no longer evaluated
until its condition is set again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from cjo_identity.domain.backfills import Backfill
from cjo_identity.domain.golden import Golden, trait_values
from cjo_platform.cel import Expression, compile_expression, load_expression
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.ids import SEGMENT_ID_RULE, is_segment_id
from cjo_platform.limits import storable_text
from cjo_platform.profiles import consent_view

VARIABLES = ("traits", "computed", "consent")
ENTERED = "segment_entered"
EXITED = "segment_exited"
PROFILE_DELETED = "profile_deleted"
PROFILE_MERGED = "profile_merged"
# The reason a segment_exited event carries when the segment itself was deleted.
SEGMENT_DELETED = "segment_deleted"

MAX_DISPLAY_NAME = 200
# Consecutive evaluation errors (no success in between) that make a segment INVALID: enough
# that a few profiles with odd data never switch a segment off, few enough that a condition
# failing for everyone stops costing an evaluation per profile soon.
INVALID_AFTER = 50
MAX_ERROR_LENGTH = 1000
UPDATABLE = frozenset({"display_name", "condition"})


class SegmentState(StrEnum):
    ACTIVE = "active"
    INVALID = "invalid"


@dataclass(frozen=True)
class Segment:
    segment_id: str
    display_name: str
    condition: str
    create_time: datetime
    state: SegmentState = SegmentState.ACTIVE
    error_count: int = 0
    consecutive_errors: int = 0
    last_error: str = ""
    last_error_time: datetime | None = None
    last_error_profile_id: str = ""
    update_time: datetime | None = None  # None: never updated since created
    etag: str = ""
    backfill: Backfill | None = None  # the scan of its condition (None: created before them)

    @property
    def expression(self) -> Expression:
        # Saved earlier: evaluated as it is, never refused by a check added since.
        return load_expression(self.condition, "segment.condition")

    @property
    def evaluated(self) -> bool:
        return self.state is SegmentState.ACTIVE


@dataclass(frozen=True)
class SegmentChanges:
    """What UpdateSegment may change; only the fields named in its mask are used."""

    display_name: str = ""
    condition: str = ""


def compile_condition(source: str, field: str) -> Expression:
    """Compiled (and cached) condition; INVALID_ARGUMENT with the error's position."""
    return compile_expression(source, field, VARIABLES)


def check_segment(segment: Segment) -> None:
    problems = Violations()
    problems.check(is_segment_id(segment.segment_id), "segment.segment_id", SEGMENT_ID_RULE)
    _check_display_name(segment.display_name, problems)
    problems.raise_if_any()
    compile_condition(segment.condition, "segment.condition")


def _check_display_name(display_name: str, problems: Violations) -> None:
    problems.check(len(display_name) <= MAX_DISPLAY_NAME, "segment.display_name",
                   f"at most {MAX_DISPLAY_NAME} characters")


def check_update_mask(paths: frozenset[str]) -> None:
    unknown = paths - UPDATABLE
    if not paths or unknown:
        raise InvalidArgument.one(
            "update_mask", f"must name some of {', '.join(sorted(UPDATABLE))}"
            + (f"; not {', '.join(sorted(unknown))}" if unknown else ""))


def apply_changes(segment: Segment, changes: SegmentChanges, paths: frozenset[str],
                  now: datetime, etag: str) -> Segment:
    """The segment after an update (validated). Setting the condition, even to the same text,
    clears its evaluation errors and makes it ACTIVE: its members are then recomputed."""
    check_update_mask(paths)
    problems = Violations()
    display_name = changes.display_name if "display_name" in paths else segment.display_name
    _check_display_name(display_name, problems)
    problems.raise_if_any()
    updated = replace(segment, display_name=display_name, update_time=now, etag=etag)
    if "condition" not in paths:
        return updated
    compile_condition(changes.condition, "segment.condition")
    return replace(updated, condition=changes.condition, state=SegmentState.ACTIVE,
                   error_count=0, consecutive_errors=0, last_error="", last_error_time=None,
                   last_error_profile_id="")


def consent_of(golden: Golden) -> dict[str, str]:
    """The ``consent`` a segment condition reads, the same as journeys' ``profile.consent``."""
    return consent_view((channel, topic, record.subscribed)
                        for (channel, topic), record in golden.consents.items())


def activation(golden: Golden, computed: Mapping[str, Any]) -> dict[str, Any]:
    return {"traits": trait_values(golden.traits), "computed": dict(computed),
            "consent": consent_of(golden)}


@dataclass(frozen=True)
class Verdict:
    """The outcome of evaluating a condition for one profile: member or not, or the error
    (then membership is left as it was)."""

    member: bool
    error: str = ""


def evaluate(expression: Expression, facts: Mapping[str, Any]) -> Verdict:
    """Evaluate a segment's condition. A trait (or map key) the profile does not have, or has in
    another type than the condition expects, makes the condition false, as documented (the rule
    of :func:`cjo_platform.cel.is_missing_data`, shared with journeys' conditions); any other
    failure is the verdict's error, never an exception, whatever the CEL runtime raises (its
    errors are not one class)."""
    try:
        return Verdict(expression.holds(facts))
    except Exception as exc:  # the customer's expression on the customer's data: anything
        # The condition is on the segment already; the error says what went wrong with it.
        text = str(exc).removeprefix(f"{expression.source!r}: ") or type(exc).__name__
        return Verdict(False, storable_text(text, MAX_ERROR_LENGTH))


@dataclass
class Health:
    """A segment's evaluations in one batch (ingest, erasure or a membership recomputation),
    summed up so the batch writes one update per segment. ``held`` is the segment's count of
    consecutive errors when the batch read it."""

    held: int = 0
    errors: int = 0
    # Errors after the batch's last success; with ``succeeded`` the new consecutive count is
    # ``trailing_errors`` alone, else ``held + trailing_errors``.
    trailing_errors: int = 0
    succeeded: bool = False
    last_error: str = ""
    last_error_profile_id: str = ""

    def broken(self, error: str) -> None:
        """The stored condition no longer compiles (a rule tightened since it was saved): the
        segment is INVALID at once, with that error."""
        self.errors += 1
        self.succeeded = True  # what came before does not matter
        self.trailing_errors = INVALID_AFTER
        self.last_error = error
        self.last_error_profile_id = ""

    def record(self, profile_id: str, verdict: Verdict) -> None:
        if verdict.error:
            self.errors += 1
            self.trailing_errors += 1
            self.last_error = verdict.error
            self.last_error_profile_id = profile_id
        else:
            self.succeeded = True
            self.trailing_errors = 0

    @property
    def consecutive(self) -> int:
        return self.trailing_errors if self.succeeded else self.held + self.trailing_errors

    @property
    def invalid(self) -> bool:
        """The segment reached :data:`INVALID_AFTER` consecutive errors in this batch: it is
        not evaluated for the batch's remaining profiles."""
        return self.consecutive >= INVALID_AFTER

    @property
    def worth_writing(self) -> bool:
        """Something to store: new errors, or a success that ends a run of errors."""
        return self.errors > 0 or (self.succeeded and self.held > 0)
