"""Which database errors mean a transaction lost a race to a concurrent one (and is safe to run
again from the start): the unit of work's conflict retry asks this."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError

# PostgreSQL unique_violation, deadlock_detected and serialization_failure: the transaction was
# rolled back and running it again reads the winner's rows.
_RETRYABLE_SQLSTATES = {"23505", "40P01", "40001"}


def lost_race(exc: DBAPIError) -> bool:
    """A concurrent writer inserted the same key first (same message id, identifier or request
    id) or the database broke a deadlock: the next attempt reads the winner's rows. Other
    integrity errors (a foreign key, NOT NULL, CHECK) would fail the same way again and are
    not retried."""
    if getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    # SQLite names the constraint in the message; its busy timeout handles lock waits itself.
    return isinstance(exc, IntegrityError) and "UNIQUE constraint failed" in str(exc.orig)
