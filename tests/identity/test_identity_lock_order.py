"""Lock order between ingest and backfills (PostgreSQL): a batch that relinks a cluster learns
which other profiles it needs only after locking its owners; a backfill chunk locks a
workspace's profiles in id order. Reproduced deterministically with the chunk's own query on a
second connection, started while the batch holds the higher id and waits to learn it needs the
lower one: before the fix they deadlocked (40P01, one of them rolled back); now the batch
rolls back by itself and relocks in order, and neither waits for the other in a cycle."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from identity_support import START, Recorder, event, serve_identity
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters import profiles as profile_store
from cjo_platform.clock import ManualClock
from support import Backend

WAIT = 20.0  # seconds: the longest a state is waited for


def deadlock(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", "") == "40P01"


async def test_a_relinking_batch_and_a_backfill_chunk_do_not_deadlock(
        backend: Backend, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend.kind != "postgresql":
        pytest.skip("row locks are PostgreSQL's (SQLite has one writer)")
    async with serve_identity(backend, recorder, ManualClock(START)) as identity:
        db = identity.app.db
        acme = await identity.new_workspace("acme")
        # One user id per profile: two people who share an email are two profiles of one
        # cluster, and an event that links a new identifier to one relinks the cluster.
        ids = []
        for n in (1, 2):
            reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[event(
                f"m{n}", ("user_id", f"u{n}"), ("email", "shared@example.com"),
                identify=True)]), metadata=acme)
            assert reply.results[0].status.code == 0, reply
            ids.append(reply.results[0].profile_id)
        first, second = ids
        assert first != second
        low, high = sorted(ids)
        # An identifier the higher profile owns, so the batch locks it first.
        owned_by_high = ("email", "shared@example.com") if high == first else ("user_id", "u2")

        deadlocks: list[str] = []
        chunk_locked: list[str] = []
        chunk_errors: list[BaseException] = []
        chunk_pid: list[int] = []
        started = threading.Event()

        def backfill_chunk() -> None:
            """A backfill chunk's query: the workspace's profiles by id, locked."""
            try:
                with db.transaction() as session:
                    chunk_pid.append(session.execute(text("SELECT pg_backend_pid()"))
                                     .scalar_one())
                    started.set()
                    rows = profile_store.scan_profiles(session, "acme", "", 1000,
                                                       for_update=True)
                    chunk_locked.extend(p for p, _, _ in rows)
            except BaseException as exc:
                chunk_errors.append(exc)
                if deadlock(exc):
                    deadlocks.append("backfill chunk")
                started.set()

        def waiting_for_a_lock(pid: int) -> bool:
            with db.engine.connect() as conn:
                return conn.execute(text(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": pid}).scalar() is True

        chunk = threading.Thread(target=backfill_chunk)
        members = profile_store.cluster_members
        golden_for_update = profile_store.golden_for_update

        def members_once_the_chunk_waits(*args: Any, **kwargs: Any) -> Any:
            # The batch holds the higher profile: start the chunk, which locks the lower one
            # and then waits for the higher one, before the batch goes on.
            if not chunk.is_alive() and not chunk_pid:
                chunk.start()
                assert started.wait(WAIT)
                deadline = time.monotonic() + WAIT
                while chunk_pid and not waiting_for_a_lock(chunk_pid[0]):
                    assert time.monotonic() < deadline, "the chunk never waited"
                    time.sleep(0.01)  # polling a state of another connection
            return members(*args, **kwargs)

        def golden_watched(*args: Any, **kwargs: Any) -> Any:
            try:
                return golden_for_update(*args, **kwargs)
            except Exception as exc:
                if deadlock(exc):
                    deadlocks.append("ingest")
                raise

        monkeypatch.setattr(profile_store, "cluster_members", members_once_the_chunk_waits)
        monkeypatch.setattr(profile_store, "golden_for_update", golden_watched)
        reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[event(
            "m3", owned_by_high, ("anonymous_id", "visitor-1"), name="page_viewed")]),
            metadata=acme)
        assert reply.results[0].status.code == 0, reply
        assert chunk_pid, "the batch never looked up its cluster"
        chunk.join(WAIT)
        assert not chunk.is_alive()
        assert deadlocks == []
        assert chunk_errors == []
        assert chunk_locked == [low, high]  # the chunk got both, in order
        assert reply.results[0].profile_id == high
