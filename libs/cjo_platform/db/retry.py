"""Which database errors mean a transaction lost a race to a concurrent one (and is safe to run
again from the start): the unit of work's conflict retry asks this."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError

# PostgreSQL deadlock_detected and serialization_failure: the transaction was rolled back and
# is safe to run again.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}


def lost_race(exc: DBAPIError) -> bool:
    """A concurrent writer inserted the same key first (same message id, identifier or request
    id) or the database broke a deadlock: the next attempt reads the winner's rows."""
    return isinstance(exc, IntegrityError) or (
        getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES)
