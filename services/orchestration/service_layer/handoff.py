"""New enrollments handed from the transaction that created them straight to this process's
step worker, already leased: no claim transaction and no poll between an event and its
journey's first step.

The event round (and HandleEvents, which applies what it receives) inserts the enrollments it
creates that are due at once with this process's lease (:meth:`Handoff.lease`); once that
transaction commits it gives them here (:meth:`Handoff.give`), and the step worker takes them
(:meth:`Handoff.take`) before it claims due work from the database. The lease is what a claim
would have taken, so every guarantee of a claim holds: another replica's claim skips them while
it lasts, the step records only what is still leased to this token, and when this process
dies (or stops) with enrollments not yet run, they are claimed by any replica once the lease
runs out.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState


class Handoff:
    """Enrollments leased to this process by the transaction that created them, waiting for
    the step worker; safe to give from the database's threads and take on the event loop."""

    def __init__(self, lease_seconds: float) -> None:
        # One token per process: the enrollments handed over in different transactions run in
        # one step round, whose record keeps what is still leased to it.
        self.token = secrets.token_hex(16)
        self.lease_seconds = lease_seconds
        self._waiting: deque[tuple[datetime, Enrollment]] = deque()
        self._lock = threading.Lock()
        # Called (thread-safe) when enrollments were given: the step worker's wake-up.
        self.on_give: Callable[[], None] = lambda: None

    def lease(self, now: datetime) -> tuple[str, datetime]:
        """The lease new enrollments get from a transaction at ``now``: token and end."""
        return self.token, now + timedelta(seconds=self.lease_seconds)

    @staticmethod
    def ready(enrollment: Enrollment, now: datetime) -> bool:
        """Whether a new enrollment is one to lease and hand over: active and due already
        (one that waits first is the timers' claim's, when it falls due)."""
        return (enrollment.state is EnrollmentState.ACTIVE and enrollment.due_time is not None
                and enrollment.due_time <= now)

    def give(self, leased_until: datetime, enrollments: Sequence[Enrollment]) -> None:
        """Enrollments a committed transaction inserted leased to :attr:`token` until
        ``leased_until``."""
        with self._lock:
            self._waiting.extend((leased_until, e) for e in enrollments)
        self.on_give()

    def take(self, limit: int, now: datetime) -> tuple[list[Enrollment], datetime | None]:
        """Up to ``limit`` handed enrollments, oldest first, and until when all their leases
        surely hold (half a lease before the earliest ends, as a claim counts it: room for
        replicas' clocks to disagree). One whose lease has less than half its length left is
        not run from here: it is left to the claims once the lease runs out, so no step is
        begun that its lease might not cover."""
        margin = timedelta(seconds=self.lease_seconds / 2)
        taken: list[Enrollment] = []
        earliest: datetime | None = None
        with self._lock:
            while self._waiting and len(taken) < limit:
                until, enrollment = self._waiting.popleft()
                if until - now >= margin:
                    taken.append(enrollment)
                    earliest = until if earliest is None else min(earliest, until)
        return taken, None if earliest is None else earliest - margin

    def __len__(self) -> int:
        return len(self._waiting)
