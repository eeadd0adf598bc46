"""Re-running a unit of work that lost a race to a concurrent transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError

T = TypeVar("T")

# PostgreSQL deadlock_detected and serialization_failure: the transaction was rolled back and
# is safe to run again.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}


def lost_race(exc: DBAPIError) -> bool:
    return isinstance(exc, IntegrityError) or (
        getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES)


def retry_on_conflict(work: Callable[[], T], attempts: int = 3) -> T:
    """Run ``work`` (a whole transaction) again when a concurrent writer inserted the same key
    first (same message id, identifier or request id) or the database broke a deadlock: the
    next attempt reads the winner's rows and decides accordingly."""
    for _ in range(attempts - 1):
        try:
            return work()
        except DBAPIError as exc:
            if not lost_race(exc):
                raise
    return work()
