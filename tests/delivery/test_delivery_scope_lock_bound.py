"""PostgreSQL: the advisory locks a delivery writer takes for its scopes (adapters/held.py,
``lock_scopes``) are bounded per workspace. They share the server's lock table
(max_locks_per_transaction x max_connections, for every database): a lock per scope cost a
batch of one workspace a thousand slots, and a dozen such transactions at once filled the table
("out of shared memory"). A scope's lock is now one of ``SCOPE_BUCKETS`` of its workspace: a
big batch of a workspace holds them all (and waits for, and holds off, the workspace's other
writers), a batch spread over workspaces one per scope, and writers of scopes in other
buckets go on side by side."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from test_delivery_consent_tenants import Storage, storage
from test_delivery_held_release import LEASE, WS, new

from cjo_delivery.adapters import held
from cjo_delivery.adapters.held import SCOPE_BUCKETS, Scope, scope_bucket
from cjo_delivery.domain.sending import after_success
from cjo_delivery.service_layer import messages, outcomes
from cjo_delivery.service_layer.claims import claim_due
from cjo_platform.secret_box import SecretBox
from support import eventually

__all__ = ["storage"]  # the fixture

pytestmark = pytest.mark.postgres
BIG = [(WS, f"p{index:04}", "email") for index in range(1000)]  # a full batch's scopes
ELSEWHERE = (WS, "zed", "email")  # a scope of the workspace outside BIG
# Scopes of the workspace each in a bucket of its own.
APART = list({scope_bucket(s): s for s in reversed(BIG)}.values())


def on_postgresql(storage: Storage) -> None:
    if storage.transactions.db.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks: PostgreSQL (SQLite has one writer, nothing to lock)")


def advisory_locks(session: Session) -> int:
    """How many advisory locks the session's transaction holds (its backend's rows)."""
    return int(session.execute(text(
        "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
        "AND locktype = 'advisory'")).scalar_one())


def waits_for_a_lock(storage: Storage, pid: int) -> bool:
    """Whether the backend ``pid`` waits for a lock (a row of it in pg_locks not granted)."""
    with storage.transactions.db.engine.connect() as connection:
        return bool(connection.execute(text(
            "SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"),
            {"pid": pid}).scalar_one())


@dataclass
class Open:
    """A transaction locking scopes, left open once it has them until ``go`` is set."""

    finished: asyncio.Future[None]
    pid: int  # its backend
    locked: threading.Event
    go: threading.Event


async def lock_and_stay(storage: Storage, scopes: Sequence[Scope]) -> Open:
    """Start a transaction that locks ``scopes`` (once its backend is known, the lock may be
    waited for still)."""
    started, locked, go = threading.Event(), threading.Event(), threading.Event()
    pids: list[int] = []

    def lock(uow: Any) -> None:
        pids.append(uow.session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        started.set()
        held.lock_scopes(uow.session, scopes)
        locked.set()
        assert go.wait(30)

    finished = asyncio.get_running_loop().run_in_executor(
        None, lambda: storage.transactions.run_sync(lock, attempts=1))
    assert await asyncio.to_thread(started.wait, 30)
    return Open(finished, pids[0], locked, go)


async def end_all(*transactions: Open) -> None:
    for transaction in transactions:
        transaction.go.set()
    for transaction in transactions:
        await asyncio.wait_for(transaction.finished, 30)


async def test_a_queueing_of_a_thousand_profiles_holds_its_workspaces_locks(
        storage: Storage) -> None:
    """A batch of a thousand profiles' messages of one workspace (a lock per scope: 1,000)."""
    on_postgresql(storage)

    def queue_and_count(uow: Any) -> int:
        messages.queue_messages(uow, WS, [new(f"k{i}", profile) for i, (_, profile, _) in
                                          enumerate(BIG)], "", lambda *announced: None)
        return advisory_locks(uow.session)

    assert storage.transactions.run_sync(queue_and_count) == SCOPE_BUCKETS


def test_a_transaction_holds_a_lock_per_scope_bucket_of_each_workspace(
        storage: Storage) -> None:
    """A thousand scopes of one workspace (its buckets: 32) and one scope of each of a hundred
    others (one each, not two): a lock per scope took 1,100."""
    on_postgresql(storage)
    scopes = [*BIG, *((f"{WS}-{i}", "ada", "email") for i in range(100))]

    def lock_and_count(uow: Any) -> int:
        held.lock_scopes(uow.session, scopes)
        return advisory_locks(uow.session)

    assert storage.transactions.run_sync(lock_and_count) == SCOPE_BUCKETS + 100


def test_recording_a_group_message_by_message_holds_the_groups_locks_only(
        storage: Storage) -> None:
    """outcomes.record_each locks the group's scopes, then each message's record asks for its
    own again: those take nothing new."""
    on_postgresql(storage)
    now = storage.clock.now()
    count = 40
    storage.transactions.run_sync(lambda uow: messages.queue_messages(
        uow, WS, [new(f"k{i}", f"p{i}") for i in range(count)], "", lambda *announced: None))
    claims, _ = storage.transactions.run_sync(
        lambda uow: claim_due(uow, now, LEASE, count, SecretBox([]), "A"))
    assert len(claims) == count

    def record_and_count(uow: Any) -> int:
        outcomes.record_each(uow, [(c, after_success(c.attempts, c.message_id))
                                   for c in claims], now)
        return advisory_locks(uow.session)

    buckets = {scope_bucket((WS, f"p{i}", "email")) for i in range(count)}
    assert storage.transactions.run_sync(record_and_count) == len(buckets) < count


async def test_a_big_transaction_waits_for_a_small_one_of_its_workspace(
        storage: Storage) -> None:
    """A writer of one scope of the workspace (not among the big one's) is open: the big one
    waits for it (a lock per scope: no scope in common, no wait)."""
    on_postgresql(storage)
    small = await lock_and_stay(storage, [ELSEWHERE])
    big = None
    try:
        assert await asyncio.to_thread(small.locked.wait, 30)
        big = await lock_and_stay(storage, BIG)
        assert await eventually(lambda: big.locked.is_set() or waits_for_a_lock(storage, big.pid))
        assert not big.locked.is_set()
        await end_all(small)
        assert await asyncio.to_thread(big.locked.wait, 30)
    finally:
        await end_all(small, *([big] if big else []))


async def test_a_small_transaction_waits_for_a_big_one_of_its_workspace(
        storage: Storage) -> None:
    """The big one is open: a writer of another scope of the workspace waits for it, and one
    of another workspace does not."""
    on_postgresql(storage)
    big = await lock_and_stay(storage, BIG)
    opened = []
    try:
        assert await asyncio.to_thread(big.locked.wait, 30)
        small = await lock_and_stay(storage, [ELSEWHERE])
        opened.append(small)
        other = await lock_and_stay(storage, [("ws-other", "zed", "email")])
        opened.append(other)
        assert await eventually(
            lambda: small.locked.is_set() or waits_for_a_lock(storage, small.pid))
        assert not small.locked.is_set()
        assert await asyncio.to_thread(other.locked.wait, 30)
        await end_all(big)
        assert await asyncio.to_thread(small.locked.wait, 30)
    finally:
        await end_all(big, *opened)


async def test_small_transactions_on_other_scopes_of_a_workspace_go_on_side_by_side(
        storage: Storage) -> None:
    """Scopes in other buckets: the second takes its locks while the first is open (and one on
    the first's scope waits)."""
    on_postgresql(storage)
    first = await lock_and_stay(storage, APART[:10])
    opened = []
    try:
        assert await asyncio.to_thread(first.locked.wait, 30)
        beside = await lock_and_stay(storage, APART[10:20])
        opened.append(beside)
        assert await eventually(
            lambda: beside.locked.is_set() or waits_for_a_lock(storage, beside.pid))
        assert beside.locked.is_set()
        same = await lock_and_stay(storage, [APART[0]])
        opened.append(same)
        assert await eventually(
            lambda: same.locked.is_set() or waits_for_a_lock(storage, same.pid))
        assert not same.locked.is_set()
    finally:
        await end_all(first, *opened)
