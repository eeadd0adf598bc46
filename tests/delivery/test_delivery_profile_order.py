"""Each profile's messages reach the providers in the order they were queued, whichever sender
process claims them: the claim takes a profile's message only when no message of the profile
queued before it is in the way (being sent by another process, or due and left to another
claim), in queue order (``messages.queue_order``)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from delivery_support import (
    SmtpSink,
    all_sent,
    delivery_app,
    delivery_processes,
    rendered_email,
    send_request,
    smtp_server,
)
from query_plans import plans
from sqlalchemy import func, insert, select, text, update

from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo_delivery import adapters
from cjo_delivery.adapters import repository
from cjo_delivery.adapters.tables import messages
from cjo_delivery.domain.messages import Channel, NewMessage
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.migrations import alembic_config, upgrade
from support import PG_URL, Backend, as_service, eventually, free_port

WS = as_service("ws-a")
LEASE = timedelta(minutes=5)


def new(key: str, profile: str, channel: Channel = Channel.EMAIL) -> NewMessage:
    return NewMessage(idempotency_key=key, profile_id=profile, address=f"{key}@example.com",
                      channel=channel, content=rendered_email().SerializeToString(),
                      journey_id="", enrollment_id="")


async def test_a_profiles_message_waits_while_another_process_sends_the_one_before(
        backend: Backend) -> None:
    """Ada's first message is being sent by process A: process B's claim leaves her next ones
    (and only hers) queued; A's own claim takes them (it orders its own sends), and so does B
    once A's lease ran out, the first message with them, first. (Each of hers on another
    channel: on one channel the later ones are HELD behind the first, see
    test_delivery_held_release.)"""
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    ids = iter(f"m{i}" for i in range(100))

    channels = {"a1": Channel.EMAIL, "a2": Channel.SMS, "a3": Channel.PUSH,
                "a4": Channel.WEBHOOK}

    def queue(*keys: tuple[str, str]) -> None:
        with app.db.transaction() as session:
            repository.queue_messages(session, "ws-a", [
                new(k, p, channels.get(k, Channel.EMAIL)) for k, p in keys],
                clock.now(), "", lambda: next(ids))

    def claim(holder: str) -> list[str]:
        with app.db.transaction() as session:
            return [c.message_id for c in repository.claim_due(
                session, clock.now(), clock.now() + LEASE, 10, holder=holder)]

    def scenario() -> None:
        queue(("a1", "ada"))  # m0
        assert claim("A") == ["m0"]
        queue(("a2", "ada"), ("b1", "bob"), ("a3", "ada"))  # m1, m2, m3
        assert claim("B") == ["m2"]  # Ada's wait for her first, with A
        assert claim("A") == ["m1", "m3"]
        queue(("a4", "ada"))  # m4
        clock.advance(LEASE + timedelta(seconds=1))  # A is gone: its leases run out
        assert claim("B") == ["m0", "m1", "m2", "m3", "m4"]  # Bob's lease ran out too
        with app.db.transaction() as session:
            orders = session.execute(select(func.count()).select_from(messages).where(
                messages.c.queue_order.is_(None))).scalar_one()
        assert orders == 0  # the database numbered every message it stored

    try:
        await app.db.run(scenario)
    finally:
        app.db.dispose()


def test_the_migration_numbers_the_messages_not_final_yet_in_the_order_they_were_queued(
        backend: Backend) -> None:
    """Messages stored before ``queue_order`` existed: those still to be sent get their place in
    the order they were queued (creation time), final ones none; new ones come after them."""
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/d.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "delivery")
    clock = ManualClock()
    t0 = clock.now()
    # (message id, status, minutes after t0 it was queued), stored in another order.
    old = [("late", "queued", 3), ("sent", "sent", 0), ("early", "deferred", 1),
           ("middle", "sending", 2)]
    try:
        db.create_schema()
        command.upgrade(alembic_config(db, Path(str(adapters.__file__)).parent / "migrations"),
                        "0013")
        with db.engine.begin() as conn:
            for message_id, status, minutes in old:
                conn.execute(insert(messages).values(
                    workspace_id="ws-a", message_id=message_id, idempotency_key=message_id,
                    profile_id="ada", address="ada@example.com", channel="email",
                    content=b"", status=status, attempts=0, error="", provider_message_id="",
                    next_attempt_time=t0, traceparent="",
                    create_time=t0 + timedelta(minutes=minutes), update_time=t0))
        upgrade(db, Path(str(adapters.__file__)).parent / "migrations")
        with db.transaction() as session:
            repository.queue_messages(session, "ws-a", [new("new", "ada")], clock.now(), "",
                                      lambda: "new")
        with db.transaction() as session:
            m = messages.c
            rows = session.execute(select(m.message_id, m.queue_order)).all()
    finally:
        db.dispose()
    order = {message_id: queue_order for message_id, queue_order in rows}
    assert order["sent"] is None
    assert order["early"] < order["middle"] < order["late"] < order["new"]


async def test_a_claim_leaves_a_profiles_messages_to_the_claim_that_locked_an_earlier_one(
        backend: Backend) -> None:
    """Two claims at once on PostgreSQL: the first holds Ada's first message locked, not yet
    committed; the second sees it still QUEUED and skips it (SKIP LOCKED), and must then leave
    Ada's later messages alone too, taking only Bob's."""
    if backend.kind != "postgresql":
        pytest.skip("SQLite has one writer: claims never run at once")
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    ids = iter(f"m{i}" for i in range(100))

    def scenario() -> tuple[list[str], list[str]]:
        with app.db.transaction() as session:
            repository.queue_messages(session, "ws-a", [new("a1", "ada")], clock.now(), "",
                                      lambda: next(ids))
        with app.db.transaction() as session:
            repository.queue_messages(session, "ws-a", [new("a2", "ada"), new("b1", "bob")],
                                      clock.now(), "", lambda: next(ids))
        now = clock.now()
        with app.db.transaction() as first:
            held = repository.claim_due(first, now, now + LEASE, 1, holder="A")
            with app.db.transaction() as second:
                other = repository.claim_due(second, now, now + LEASE, 10, holder="B")
        return [c.message_id for c in held], [c.message_id for c in other]

    try:
        assert await app.db.run(scenario) == (["m0"], ["m2"])
    finally:
        app.db.dispose()


async def test_two_processes_send_each_profiles_messages_in_queue_order(
        backend: Backend, tmp_path: Path) -> None:
    """Two delivery processes on one database; batches of several messages per profile queued
    through both, one after another. Every profile's emails reach the SMTP server in the order
    they were queued: within a batch, and a later batch's never before an earlier one's."""
    if backend.kind != "postgresql":
        pytest.skip("replicas share a database on PostgreSQL only")
    sink = SmtpSink(delay=0.01)
    smtp_port = free_port()
    profiles = [f"p{i}" for i in range(4)]
    queued: dict[str, list[str]] = defaultdict(list)
    with smtp_server(sink, smtp_port):
        async with delivery_processes(
                backend, tmp_path / "logs", smtp_port, CJO_DELIVERY_BATCH_SIZE="3",
                CJO_DELIVERY_ROUNDS="4", CJO_DELIVERY_CONCURRENCY="8",
                CJO_DELIVERY_POLL_SECONDS="0.02") as (_, _, stubs):
            names: list[str] = []
            for b in range(8):
                requests = []
                for i in range(4):  # four messages per profile in each batch
                    for profile in profiles:
                        address = f"{profile}-{b}-{i}@example.com"
                        queued[profile].append(address)
                        requests.append(send_request(address, address, profile_id=profile))
                reply = await stubs[b % 2].BatchSendMessages(
                    pb.BatchSendMessagesRequest(requests=requests), metadata=WS)
                names += [r.message.name for r in reply.results]
            assert await eventually(lambda: all_sent(stubs[1], names, WS), timeout=60)
    received: dict[str, list[str]] = defaultdict(list)
    for message in sink.received:
        received[str(message["To"]).split("-")[0]].append(str(message["To"]))
    assert dict(received) == dict(queued)


async def test_a_profile_held_back_by_another_process_leaves_the_claim_to_the_others(
        backend: Backend) -> None:
    """Process A holds Ada's first message (a crashed replica: for the whole lease); more of
    Ada's are due than process B claims at once. B's claim still takes another workspace's
    message and Bob's: the held-back ones are left before the limit, not after it."""
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    ids = iter(f"m{i}" for i in range(100))

    def scenario() -> list[str]:
        with app.db.transaction() as session:
            repository.queue_messages(session, "ws-a", [new("a0", "ada")], clock.now(), "",
                                      lambda: next(ids))
        now = clock.now()
        with app.db.transaction() as session:
            assert [c.message_id for c in repository.claim_due(
                session, now, now + LEASE, 10, holder="A")] == ["m0"]
        # A queueing per transaction (each locks its scopes once: adapters/held.py).
        for workspace, batch in [("ws-a", [new(f"a{i}", "ada") for i in range(1, 13)]),
                                 ("ws-b", [new("c1", "cleo")]),  # m1..m12, m13
                                 ("ws-a", [new("b1", "bob")])]:  # m14
            with app.db.transaction() as session:
                repository.queue_messages(session, workspace, batch, clock.now(), "",
                                          lambda: next(ids))
        with app.db.transaction() as session:
            return [c.message_id for c in repository.claim_due(
                session, now, now + LEASE, 10, holder="B")]

    try:
        assert await app.db.run(scenario) == ["m13", "m14"]
    finally:
        app.db.dispose()


async def test_the_claim_reads_messages_not_final_through_their_indexes(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL the claim walks the pending messages in queue order through
    ``ix_messages_queue`` and stops at its limit (no scan of the table, no sort of every due
    message), and looks up a profile's earlier messages through ``ix_messages_pending`` (not
    the profile's whole history); SQLite reads the other processes' live leases once, through
    ``ix_messages_lease``."""
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    ids = iter(f"m{i}" for i in range(100_000))
    # A backlog of due messages, many per profile on one channel, as queued before migration
    # 0017 (since, a profile's later ones on a channel are HELD, out of the claim's indexes).
    monkeypatch.setattr(repository, "_hold", lambda *args: set())

    def scenario() -> list[tuple[str, str]]:
        with app.db.transaction() as session:
            for start in range(0, 4000, 500):
                repository.queue_messages(
                    session, "ws-a", [new(f"k{i}", f"p{i % 50}")
                                      for i in range(start, start + 500)],
                    clock.now(), "", lambda: next(ids))
            session.execute(update(messages).where(messages.c.queue_order % 10 != 0)
                            .values(status="sent", sent_time=clock.now()))
            if backend.kind == "postgresql":
                session.execute(text("ANALYZE messages"))
        now = clock.now()
        return plans(app.db, lambda s: repository.claim_due(s, now, now + LEASE, 10,
                                                           holder="B"), "messages")

    try:
        found = await app.db.run(scenario)
    finally:
        app.db.dispose()
    for _, plan in found:
        assert "Seq Scan on messages" not in plan and "SCAN messages\n" not in plan + "\n", plan
        if backend.kind == "postgresql":
            assert "ix_messages_queue" in plan and "Sort" not in plan, plan
            assert "ix_messages_pending" in plan, plan
        else:  # no statistics: it takes the due ones and sorts them, and reads the leases once
            assert "USING INDEX ix_messages_lease (status=? AND lease_until>?)" in plan, plan


async def test_sqlites_trigger_numbering_new_messages_exists_at_the_head_revision(
        backend: Backend) -> None:
    """SQLite numbers a new message's ``queue_order`` with a trigger (migration 0014): a later
    migration recreating the table (``batch_alter_table``) drops it, and must create it again."""
    if backend.kind != "sqlite":
        pytest.skip("PostgreSQL numbers them with the column's default (a sequence)")
    app = delivery_app(backend, free_port(), ManualClock())
    await app.db.run(app.migrate)
    try:
        with app.db.transaction() as session:
            triggers = session.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = 'messages'")).scalars().all()
    finally:
        app.db.dispose()
    assert triggers == ["messages_queue_order"]
