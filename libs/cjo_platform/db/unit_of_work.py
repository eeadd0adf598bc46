"""The unit of work every use-case runs in: one transaction, its outbox rows, its request-log
entry, the conflict retry, and the wake-ups sent once it committed.

A use-case is a plain function ``(uow: UnitOfWork, ...) -> result``; servicers, workers and
schedulers hand it to :class:`Transactions`, which runs it in the database's thread pool::

    journey = await transactions.run(lambda uow: journeys.create(uow, workspace, draft))

A mutating RPC with a ``request_id`` goes through :meth:`Transactions.once`, which returns the
first answer to every repeat, concurrent repeats included.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from cjo_platform.clock import Clock
from cjo_platform.db.engine import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.outbox import Outbox, Publication
from cjo_platform.db.retry import lost_race
from cjo_platform.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)

# A transaction that lost a race is run again this many times in all; enough for a burst of
# identical requests (each retry reads what the winner committed).
CONFLICT_ATTEMPTS = 6

# Its own generator: the global one belongs to the application (and to hypothesis in tests).
_jitter = random.Random()


class UnitOfWork:
    """One transaction of one use-case. ``session`` reads and writes; :meth:`publish` queues
    outbox rows in the same transaction; :meth:`after_commit` runs a callback (a wake-up) only
    once the transaction committed, never for an attempt that was rolled back."""

    def __init__(self, session: Session, clock: Clock, outbox: Outbox | None, *,
                 gather: bool = False) -> None:
        self.session = session
        self.clock = clock
        self._outbox = outbox
        # With ``gather``, published rows are written by :meth:`flush` (which the owner of the
        # transaction calls before commit), all topics together; otherwise at once.
        self._gather = gather
        self._published: list[Publication] = []
        # Ordered and without repeats (every publish registers the same wake-up), in O(1).
        self._after_commit: dict[Callable[[], None], None] = {}
        self._on_rollback: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return self.clock.now()

    def publish(self, topic: str, workspace_id: str,
                payloads: Sequence[tuple[bytes, str]]) -> None:
        """Queue ``(payload, traceparent)`` rows for ``topic``'s forwarder; it wakes once the
        transaction committed. Written in this transaction, at once or (``gather``) when the
        unit of work is flushed before commit: one check and one insert for all its topics."""
        if not payloads:
            return
        if self._outbox is None:
            raise RuntimeError("this service has no outbox")
        self._published.append((topic, workspace_id, payloads))
        if not self._gather:
            self.flush()

    def flush(self) -> None:
        """Write the rows published since the last flush (see :meth:`publish`)."""
        published, self._published = self._published, []
        if not published or self._outbox is None:
            return
        for topic, staged in self._outbox.stage(self.session, published):
            if staged is None:
                self.after_commit(self._outbox.notifier(topic))
            else:
                # Handed to the forwarder once committed; given back if this attempt rolls
                # back.
                self.after_commit(staged.committed)
                self._on_rollback.append(staged.rolled_back)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.setdefault(callback)

    def _rolled_back(self) -> None:
        for callback in self._on_rollback:
            try:
                callback()
            except Exception:
                log.exception("a callback after rollback failed")

    def _committed(self) -> None:
        # The change is committed whatever a wake-up does: a failing one is logged, never
        # reported to the caller as a failure of the change. Callbacks run on the database's
        # thread, so they must be thread-safe (PollingWorker.wake is).
        for callback in self._after_commit:
            try:
                callback()
            except Exception:
                log.exception("a callback after commit failed")


def _lost_connection(exc: DBAPIError) -> bool:
    """The statement failed because the connection was gone (SQLAlchemy recognised a
    disconnect and discarded the pool's connections opened before it)."""
    return exc.connection_invalidated


class Transactions:
    """Runs use-cases in units of work: off the event loop, retried when they lose a race to a
    concurrent transaction, their wake-ups sent after commit."""

    def __init__(self, db: Database, clock: Clock, outbox: Outbox | None = None,
                 requests: RequestLog | None = None) -> None:
        self.db = db
        self.clock = clock
        self.outbox = outbox
        self.requests = requests

    def run_sync(self, work: Callable[[UnitOfWork], T], *, attempts: int = CONFLICT_ATTEMPTS,
                 ) -> T:
        """Run ``work`` in one transaction in this thread; again (from the start, in a new
        transaction) when it lost a race: a unique key a concurrent writer inserted first, a
        serialization failure or a deadlock. The next attempt reads the winner's rows. Once more
        too when the connection was lost before the commit was sent."""
        reconnected = False
        attempt = 1
        while True:
            uow: UnitOfWork | None = None
            committing = False
            try:
                try:
                    with self.db.transaction() as session:
                        uow = UnitOfWork(session, self.clock, self.outbox, gather=True)
                        result = work(uow)
                        uow.flush()
                        committing = True
                except BaseException:
                    if uow is not None:
                        uow._rolled_back()
                    raise
            except DBAPIError as exc:
                if _lost_connection(exc) and not committing and not reconnected:
                    # The server ended the connection before the commit was sent (after the
                    # pool's look at it): the transaction is rolled back, nothing was done.
                    # Once, on a new connection; a database that is down fails it again.
                    reconnected = True
                    continue
                if attempt == attempts or not lost_race(exc):
                    raise
                # A little jitter so a burst of identical requests does not collide again.
                time.sleep(_jitter.uniform(0, 0.005 * attempt))
                attempt += 1
                continue
            assert uow is not None
            uow._committed()
            return result

    async def run(self, work: Callable[[UnitOfWork], T]) -> T:
        """:meth:`run_sync` in the database's thread pool (trace and log context kept)."""
        return await self.db.run(self.run_sync, work)

    def read_sync(self, work: Callable[[UnitOfWork], T]) -> T:
        """Run ``work``, which only reads, in no transaction (``Database.reading``): no BEGIN,
        no COMMIT, and each statement sees what was committed when it ran. ``work`` cannot
        publish, and must not write (see ``Database.reading``)."""
        try:
            with self.db.reading() as session:
                return work(UnitOfWork(session, self.clock, None))
        except DBAPIError as exc:
            if not _lost_connection(exc):
                raise
        # Once more on a new connection (as :meth:`run_sync`): a read changed nothing.
        with self.db.reading() as session:
            return work(UnitOfWork(session, self.clock, None))

    async def read(self, work: Callable[[UnitOfWork], T]) -> T:
        """:meth:`read_sync` off the event loop, beside the writes on SQLite
        (``Database.run_read``)."""
        return await self.db.run_read(self.read_sync, work)

    async def once(self, *, workspace_id: str, method: str, request_id: str, request: Message,
                   response_type: type[M], work: Callable[[UnitOfWork], M]) -> M:
        """Run a mutating RPC's use-case once per ``request_id``: the answer is stored with the
        change it describes, and every repeat, concurrent ones included, gets that answer.

        The request id is claimed first (an insert that waits for a concurrent claim of the same
        id to commit or roll back), so a repeat never runs the use-case against the first
        call's half-visible effects. Reusing an id for a different request is refused."""
        if not request_id:
            return await self.run(work)
        requests = self.requests
        if requests is None:
            raise RuntimeError("this service has no request log")
        key = {"workspace_id": workspace_id, "method": method, "request_id": request_id}

        def claim_and_run(uow: UnitOfWork) -> M:
            stored = requests.claim(uow.session, request=request, **key)
            if stored is not None:
                first: M = response_type.FromString(stored)
                return first
            response = work(uow)
            requests.answer(uow.session, response=response, **key)
            return response

        return await self.run(claim_and_run)
