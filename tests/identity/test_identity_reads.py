"""Orchestration's profile reads (BatchGetProfiles, before each step) and delivery's consent
checks (BatchCheckConsent, before each send round) read in no transaction: nothing to commit
(on PostgreSQL no BEGIN nor COMMIT round trip), and on SQLite beside the writes instead of
queued behind them. Identity in-process on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from identity_support import Identity, event, ingest
from sqlalchemy import event as sa_event
from sqlalchemy import insert

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters.tables import workspaces
from support import Backend


class Commits:
    """Which of an engine's connections ran a profile read (the survivors look-up both reads
    start with), and which connections committed. A session's transaction has a connection of
    its own, kept here so that no other one takes its id."""

    def __init__(self, identity: Identity) -> None:
        self.engine = identity.app.db.engine
        self.reads: list[Any] = []
        self.commits: list[Any] = []
        sa_event.listen(self.engine, "before_cursor_execute", self._statement)
        sa_event.listen(self.engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "survivor_profile_id" in statement and "FROM profile_merges" in statement:
            self.reads.append(conn)

    def _commit(self, conn: Any) -> None:
        self.commits.append(conn)

    def close(self) -> None:
        sa_event.remove(self.engine, "before_cursor_execute", self._statement)
        sa_event.remove(self.engine, "commit", self._commit)


@contextmanager
def counting(identity: Identity) -> Iterator[Commits]:
    commits = Commits(identity)
    try:
        yield commits
    finally:
        commits.close()


async def _new_profile(identity: Identity) -> tuple[list[tuple[str, str]], str]:
    acme = await identity.new_workspace("acme")
    [result] = await ingest(identity, acme, event("m1", ("user_id", "u1")))
    return acme, result.profile_id


async def test_profile_and_consent_reads_commit_nothing(identity: Identity) -> None:
    acme, profile_id = await _new_profile(identity)
    with counting(identity) as seen:
        got = await identity.events.BatchGetProfiles(pb.BatchGetProfilesRequest(
            names=[f"profiles/{profile_id}", "profiles/nobody"]), metadata=acme)
        consent = await identity.events.BatchCheckConsent(pb.BatchCheckConsentRequest(queries=[
            consent_pb2.ConsentQuery(profile_id=profile_id, channel=common_pb2.CHANNEL_EMAIL),
            consent_pb2.ConsentQuery(profile_id="nobody", channel=common_pb2.CHANNEL_EMAIL)]),
            metadata=acme)
    assert got.results[0].profile.name == f"profiles/{profile_id}"
    assert got.results[1].status.code != 0  # NOT_FOUND
    assert [r.decision.allowed for r in consent.results] == [True, False]
    assert len({id(c) for c in seen.reads}) == 2  # one session each
    assert not [c for c in seen.commits if any(c is r for r in seen.reads)]


async def test_a_profile_read_does_not_wait_for_a_write_in_progress(
        identity: Identity, backend: Backend) -> None:
    """A write transaction holds the database's write thread (and, on SQLite, the write lock):
    the step's profile read and the send round's consent check answer meanwhile."""
    acme, profile_id = await _new_profile(identity)
    db = identity.app.db
    started, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with db.transaction() as session:
            session.execute(insert(workspaces).values(
                workspace_id="slow", display_name="slow", create_time=identity.clock.now()))
            started.set()
            release.wait(30)

    writing = asyncio.ensure_future(db.run(long_write))
    try:
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
        got = await asyncio.wait_for(identity.events.BatchGetProfiles(
            pb.BatchGetProfilesRequest(names=[f"profiles/{profile_id}"]), metadata=acme), 10)
        consent = await asyncio.wait_for(identity.events.BatchCheckConsent(
            pb.BatchCheckConsentRequest(queries=[consent_pb2.ConsentQuery(
                profile_id=profile_id, channel=common_pb2.CHANNEL_EMAIL)]), metadata=acme), 10)
        assert not writing.done()
    finally:
        release.set()
        await writing
    assert got.results[0].profile.name == f"profiles/{profile_id}"
    assert consent.results[0].decision.allowed
