"""The safety net for held messages whose blockers are gone without releasing them: a bounded
batch at a time in ix_messages_held's key order, continuing where the last one stopped, each
message checked by key (no scan of every held or unfinished message), in its own transaction
(not the claim's), one replica at a time on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text, update
from test_delivery_consent_tenants import Mailbox, Storage, sending, storage
from test_delivery_waiting_order import Subscribed, queue, send_all, state

from cjo_delivery.adapters import held
from cjo_delivery.adapters.held import ORPHAN_SWEEP
from cjo_delivery.adapters.tables import messages
from cjo_delivery.domain.messages import MessageStatus
from cjo_delivery.service_layer import claims as claims_module
from cjo_platform.db.engine import pg_array

__all__ = ["storage"]  # the fixture
WS = "ws-a"


def orphans(storage: Storage, profiles: list[str]) -> list[str]:
    """Each profile's second message, HELD behind a first that ended without releasing it."""
    seconds = []
    for profile in profiles:
        first = queue(storage, f"{profile}-1", profile=profile)
        seconds.append(queue(storage, f"{profile}-2", profile=profile))
        storage.transactions.run_sync(lambda uow, first=first: uow.session.execute(
            update(messages).where(messages.c.message_id == first)
            .values(status=MessageStatus.FAILED.value, next_attempt_time=None)))
    assert {state(storage, m) for m in seconds} == {MessageStatus.HELD}
    return seconds


async def test_the_sweep_goes_a_batch_at_a_time_from_where_it_stopped(
        storage: Storage) -> None:
    now = storage.clock.now()
    queue(storage, "ada-1")
    blocked = queue(storage, "ada-2")  # held behind a queued message: stays HELD
    freed = orphans(storage, ["p0", "p1", "p2", "p3"])

    def batch(after: held.HeldKey | None) -> tuple[int, held.HeldKey | None]:
        return storage.transactions.run_sync(
            lambda uow: held.release_orphans(uow.session, now, after, batch=2))

    released, after = batch(None)  # ada's, p0's
    assert (released, after and after[1]) == (1, "p0")
    assert [state(storage, m) for m in freed] == [MessageStatus.QUEUED] + [MessageStatus.HELD] * 3
    released, after = batch(after)  # p1's, p2's
    assert (released, after and after[1]) == (2, "p2")
    assert (batch(after)) == (1, None)  # p3's: the pass is over
    assert [state(storage, m) for m in freed] == [MessageStatus.QUEUED] * 4
    assert state(storage, blocked) is MessageStatus.HELD


async def test_a_pass_of_several_batches_runs_a_batch_per_round_before_its_claim(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(held, "ORPHAN_BATCH", 1)
    mailbox = Mailbox()
    rounds = sending(storage, Subscribed(), mailbox)
    await rounds.run()  # the first pass (nothing held)
    freed = orphans(storage, ["p0", "p1", "p2"])
    storage.clock.advance(ORPHAN_SWEEP)
    swept: list[object] = []
    sweep = claims_module.release_orphans

    def counted(uow: object, now: object, after: held.HeldKey | None) -> object:
        swept.append(after and after[1])
        return sweep(uow, now, after)  # type: ignore[arg-type]

    monkeypatch.setattr("cjo_delivery.service_layer.send_round.release_orphans", counted)
    await send_all(storage, rounds, *freed)
    assert sorted(mailbox.sent) == sorted(freed)
    assert swept == [None, "p0", "p1"]  # one batch a round
    await rounds.run()
    await rounds.run()
    assert swept == [None, "p0", "p1", "p2"]  # the last found none after p2: the pass is over


@pytest.mark.postgres
async def test_one_replica_sweeps_at_a_time_on_postgresql(storage: Storage) -> None:
    engine = storage.transactions.db.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory lock: PostgreSQL")
    now = storage.clock.now()
    (second,) = orphans(storage, ["ada"])
    with engine.begin() as other:  # another replica's batch, under way
        assert other.execute(held._PG_SWEEPER).scalar_one()
        assert storage.transactions.run_sync(
            lambda uow: held.release_orphans(uow.session, now)) == (0, None)
        assert state(storage, second) is MessageStatus.HELD
    assert storage.transactions.run_sync(
        lambda uow: held.release_orphans(uow.session, now)) == (1, None)
    assert state(storage, second) is MessageStatus.QUEUED


BACKLOG = (
    "INSERT INTO messages (workspace_id, message_id, idempotency_key, profile_id, address,"
    " channel, content, journey_id, enrollment_id, status, attempts, error,"
    " provider_message_id, next_attempt_time, traceparent, create_time, update_time,"
    " queue_order, holds)"
    " SELECT 'ws-a', 'm' || g, 'k' || g, 'p' || (g / 6), 'a@x', 'email', ''::bytea, '',"
    " '', CASE WHEN g % 6 IN (0, 1) THEN 'sent' WHEN g % 6 = 2 THEN 'queued'"
    " ELSE 'held' END, 1, '', '', CASE WHEN g % 6 = 2 THEN :later END, '', :now, :now,"
    " g, g % 6 = 2 FROM generate_series(1, :n) AS g")


@pytest.mark.postgres
async def test_a_batch_probes_each_held_message_by_key_on_postgresql(storage: Storage) -> None:
    """A blocked backlog (20,000 profiles each with one message waiting for its retry and three
    held behind it, two sent): a batch reads its range of ix_messages_held and probes the
    earlier messages of each by key; no hash join over every unfinished or held message (the
    sweep over every held message took 456-646 ms at 150,000 held)."""
    engine = storage.transactions.db.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL plan (SQLite: the next test)")
    now = storage.clock.now()
    with engine.begin() as connection:
        connection.execute(text(BACKLOG), {"n": 6 * 20_000, "now": now,
                                           "later": now.replace(year=now.year + 1)})
        connection.execute(text("ANALYZE messages"))
    plans = []
    for after in (held._START, (WS, "p100", "email", 0)):  # the first batch, a later one
        plans.append(explained(engine, after))
    for plan in plans:
        assert "ix_messages_held" in plan and "ix_messages_pending" in plan, plan
        assert "Hash" not in plan and "Seq Scan" not in plan and "Bitmap" not in plan, plan
    assert storage.transactions.run_sync(
        lambda uow: held.release_orphans(uow.session, now))[0] == 0  # all blocked


async def test_a_batch_probes_each_held_message_by_key_on_sqlite(storage: Storage) -> None:
    engine = storage.transactions.db.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite plan")
    plans = [explained(engine, after) for after in (held._START, (WS, "p100", "email", 0))]
    for plan in plans:
        # The held keys of the batch, by ix_messages_held, then each message and the earlier
        # ones of its scope by key: never all the held messages (as by ix_messages_lease).
        assert "SCAN" not in plan and "ix_messages_lease" not in plan, plan
        assert "SEARCH h USING INDEX ix_messages_held" in plan, plan
        assert "SEARCH e USING INDEX ix_messages_pending" in plan, plan


def explained(engine: Engine, after: held.HeldKey) -> str:
    """The plans of a batch's two statements: its ORPHAN_BATCH held messages after ``after``,
    their release."""
    parameters = {"now": datetime.now(UTC), "batch": held.ORPHAN_BATCH}
    parameters.update(zip(("after_workspace", "after_profile", "after_channel", "after_order"),
                          after, strict=True))
    explain = ("EXPLAIN (COSTS OFF) " if engine.dialect.name == "postgresql"
               else "EXPLAIN QUERY PLAN ")
    find_batch, release = held._ORPHANS[engine.dialect.name]
    with engine.connect() as connection:
        rows = connection.execute(find_batch, parameters).all()
        if engine.dialect.name == "postgresql":
            parameters.update(workspaces=pg_array([r[1] for r in rows]),
                              message_ids=pg_array([r[0] for r in rows]))
        else:
            parameters.update({"last_workspace": WS, "last_profile": "p10400",
                               "last_channel": "email", "last_order": 0})
        return "\n".join(str(row[-1]) for statement in (find_batch, release)
                         for row in connection.execute(
                             text(explain + statement.text).bindparams(
                                 *statement._bindparams.values()), parameters).all())
