"""Inbox retention keeps a given-up event's row while a dead letter points at it: the letter is
found through ix_dead_letters_item, one probe per row, not by walking every letter of the
workspace (10,000 letters cost 9 s a batch on SQLite, holding the writer); and an event applied
after failed attempts loses their error, so retention never looks for its letter at all."""

from __future__ import annotations

from datetime import timedelta

from query_plans import plans, probed_by
from retention_support import NOW, filled, service_db
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cjo_orchestration.adapters import enrollments as enrollment_store
from cjo_orchestration.adapters.enrollments import INBOX_SOURCE
from cjo_orchestration.adapters.retention import RULES
from cjo_orchestration.adapters.tables import dead_letters, inbox
from cjo_platform.db.retention import remove_batch
from support import Backend

OLD = NOW - timedelta(days=10)
LETTERS = 3000  # enough that a planner prefers an index to a scan where one applies


async def test_a_letter_is_found_by_its_item_not_by_walking_the_workspace(
        backend: Backend) -> None:
    [rule] = [r for r in RULES if r.kind == "inbox"]
    with service_db("orchestration", backend) as db:
        with db.storage.db.transaction() as session:
            session.execute(inbox.insert(), [filled(inbox, {
                "workspace_id": "w1", "event_id": f"g{i}", "profile_id": "p", "properties": {},
                "traits": {}, "receive_time": OLD, "processed": True, "attempts": 5,
                "last_error": "UNAVAILABLE"}) for i in range(LETTERS)])
            session.execute(dead_letters.insert(), [filled(dead_letters, {
                "workspace_id": "w1", "source": INBOX_SOURCE, "item_key": f"g{i}",
                "payload": b"", "error": "UNAVAILABLE", "first_failed_time": OLD,
                "last_failed_time": OLD}) for i in range(LETTERS)])
            if not db.storage.db.is_sqlite:
                session.execute(text("ANALYZE inbox"))
                session.execute(text("ANALYZE dead_letters"))

        def batch(session: Session) -> None:
            if not db.storage.db.is_sqlite:
                # PostgreSQL hashes the workspace's letters once a batch while they fit in
                # work_mem (4 MB: some 50,000 letters); past that it looks for each row's.
                session.execute(text("SET LOCAL work_mem = '64kB'"))
            remove_batch(session, rule, NOW, 7, 1000)

        [(_, plan)] = plans(db.storage.db, batch, "dead_letters")
        assert probed_by(db.storage.db, plan, "item_key"), plan


async def test_an_event_applied_after_failed_attempts_loses_their_error(
        backend: Backend) -> None:
    with service_db("orchestration", backend) as db:
        db.insert(inbox, [{"workspace_id": "w1", "event_id": "e1", "profile_id": "p",
                           "properties": {}, "traits": {}, "receive_time": OLD,
                           "processed": False, "attempts": 2, "last_error": "UNAVAILABLE"}])
        with db.storage.db.transaction() as session:
            seq = session.execute(select(inbox.c.seq)).scalar_one()
            enrollment_store.mark_processed(session, [seq])
        assert db.rows(inbox, inbox.c.processed, inbox.c.attempts, inbox.c.last_error) == [
            (True, 2, "")]
