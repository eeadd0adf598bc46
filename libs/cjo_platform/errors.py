"""Domain errors: raised by domain and adapter code, turned into rich gRPC statuses at the edge.

Nothing here knows about gRPC, so domain code can raise these freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One problem with one request field, e.g. ``events[3].identifiers``."""

    field: str
    description: str


class CjoError(Exception):
    """Base of every error that reaches a caller. ``reason`` is UPPER_SNAKE and stable."""

    code_name = "INTERNAL"  # canonical gRPC code name
    default_reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(CjoError):
    code_name = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, message: str | None = None,
                 reason: str | None = None) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        summary = message or "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(summary, reason=reason)
        self.violations = list(violations)

    @classmethod
    def one(cls, field_path: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field_path, description)])

    def within(self, prefix: str) -> InvalidArgument:
        """The same problems, with fields relative to ``prefix`` (e.g. ``events[3]``). A
        violation with no field is the item itself (a bad string in a repeated field)."""
        return InvalidArgument([FieldViolation(f"{prefix}.{v.field}" if v.field else prefix,
                                               v.description)
                                for v in self.violations], reason=self.reason)


class NotFound(CjoError):
    code_name = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class AlreadyExists(CjoError):
    code_name = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(CjoError):
    code_name = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class Aborted(CjoError):
    """A concurrent change won (e.g. a stale etag); the caller should re-read and retry."""

    code_name = "ABORTED"
    default_reason = "ETAG_MISMATCH"


class PermissionDenied(CjoError):
    code_name = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(CjoError):
    code_name = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


class Unavailable(CjoError):
    """A dependency is down; retrying later may succeed."""

    code_name = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"


@dataclass
class Violations:
    """Collects every problem of a request before failing, so a caller sees them all at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def check(self, ok: bool, field_path: str, description: str) -> bool:
        if not ok:
            self.add(field_path, description)
        return ok

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
