"""Backend CPU of a step round's statements by key for a workspace the planner's statistics do
not know (a new tenant inside big tables, until autovacuum's next ANALYZE), on PostgreSQL: the
lease of the enrollments a round claimed, the check that it still holds them, and whether
events of its profiles wait in the inbox, each with the statement it replaced beside it.

    .venv/bin/python tests/benchmarks/new_workspace_rounds.py [--known 200000] [--new 101000]

Orchestration's schema gets ``--known`` enrollments and inbox events of two workspaces,
analyzed, then ``--new`` of a new workspace (autovacuum off for the two tables, so the
statistics stay as they were). Each statement runs for 500 of the new workspace's enrollments
(the inbox: 500 profiles, none with a pending event, so every probe runs) in a transaction
rolled back, old and new alternating; prints the median backend CPU (/proc/<pid>/schedstat)
per call, and the same for a known workspace.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestration"))

from new_workspace import known_then_new, print_row
from orchestration_support import migrated_database
from sqlalchemy import bindparam, not_, select
from sqlalchemy.orm import Session

from cjo_orchestration.adapters import enrollments as store
from cjo_orchestration.adapters.tables import enrollments, inbox
from cjo_platform.db import keys_param, one_of_keys
from support import drop_schemas, new_backend

NOW = datetime(2026, 3, 1, tzinfo=UTC)
BATCH = 500

ENROLLMENTS = """INSERT INTO enrollments (workspace_id, enrollment_id, journey_id,
    journey_version, profile_id, state, current_node_id, visits, attempts, last_error,
    step_count, due_time, traits, properties, event_id, traceparent, create_time, update_time,
    entry_id, waiting, exit_reason, entry_properties)
    SELECT :ws || CASE WHEN :split THEN (i % 2)::text ELSE '' END, 'en' || lpad(i::text, 8, '0'),
    'j' || (i % 3), 1, 'p' || i, 'active', 'wait', '{"wait": 1}', 0, '', 2, :now,
    '{"email": "ann@example.com"}', '{}', 'e' || i, '', :now, :now, 'e' || i, true, '', '{}'
    FROM generate_series(1, :n) AS i"""
EVENTS = """INSERT INTO inbox (workspace_id, event_id, profile_id, event_name, properties,
    traits, traceparent, receive_time, processed, attempts, last_error)
    SELECT :ws || CASE WHEN :split THEN (i % 2)::text ELSE '' END, 'ev' || i, 'p' || (i % 20000),
    'page_viewed', '{}', '{}', '', :now, i % 10 <> 0, 0, '' FROM generate_series(1, :n) AS i"""


def old_still_leased(session: Session, token: str, keys: list[tuple[str, str]]) -> Any:
    c = enrollments.c
    return session.execute(select(c.workspace_id, c.enrollment_id)
                           .where(store._keys_in(session, (c.workspace_id, c.enrollment_id),
                                                 keys), c.lease_token == token)
                           .with_for_update()).all()


def old_pending(session: Session, workspace_id: str, ids: list[str]) -> Any:
    c = inbox.c
    statement = (select(c.seq).where(not_(c.processed), c.workspace_id == bindparam("ws"),
                                     one_of_keys("postgresql", c.profile_id, "ids")).limit(1))
    return session.execute(statement, {"ws": workspace_id,
                                       "ids": keys_param("postgresql", ids)}).first()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--known", type=int, default=200_000)
    parser.add_argument("--new", type=int, default=101_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    backend = new_backend("postgresql", Path(tempfile.mkdtemp()))
    db = migrated_database(backend)
    try:
        known_then_new(db, {"enrollments": ENROLLMENTS, "inbox": EVENTS}, args.known,
                       args.new, NOW)
        until = NOW + timedelta(seconds=60)
        print("| statement | workspace | old | new (backend CPU ms per call, median) |")
        print("|---|---|---|---|")
        for workspace_id, step in (("newcomer", args.new // BATCH), ("ws0", args.known // BATCH)):
            numbers = range(step if workspace_id == "ws0" else 1, args.known, step)
            keys = [(workspace_id, f"en{i:08d}") for i in numbers][:BATCH]
            ids = [f"x{i}" for i in range(BATCH)]  # no pending event: every probe runs
            pairs = [(workspace_id, p) for p in ids]
            cases: dict[str, tuple[Callable[[Session], Any], Callable[[Session], Any]]] = {
                "lease (claim_due)": (
                    lambda s, k=keys: s.execute(store._lease_statement("postgresql"), {
                        "ws": k[0][0], "ids": keys_param("postgresql", [e for _, e in k]),
                        "until": until, "token": "t"}),
                    lambda s, k=keys: store.bulk_update(s, enrollments, store._KEY, [
                        {"workspace_id": w, "enrollment_id": e, "lease_until": until,
                         "lease_token": "t"} for w, e in k])),
                "still_leased": (lambda s, k=keys: old_still_leased(s, "t", k),
                                 lambda s, k=keys: store.still_leased(
                                     s, "t", [(w, f"p{int(e[2:])}", e) for w, e in k])),
                "events_pending": (lambda s, w=workspace_id, i=ids: old_pending(s, w, i),
                                   lambda s, p=pairs: store.events_pending(s, p)),
            }
            for name, variants in cases.items():
                print_row(db, name, workspace_id, variants, args.rounds)
    finally:
        db.dispose()
        drop_schemas(backend)


if __name__ == "__main__":
    main()
