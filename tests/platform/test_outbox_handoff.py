"""A unit of work's outbox rows are handed to the forwarder running in its process: no claim
transaction, delivered rows deleted lazily, and never at the cost of order, of a row sent twice,
or of a bad row holding up the others."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from outbox_support import Box, Rounds, open_box, stop, url_of
from sqlalchemy import event, select

from cjo_platform.backoff import RetryPolicy
from cjo_platform.clock import SystemClock
from cjo_platform.db import Database
from cjo_platform.db.outbox import HANDOFF_QUEUE_ROWS, Forwarder, Later, OutboxRow, Refusal
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.facts import FACTS_TOPIC, facts_forwarder
from support import Backend, eventually, settings_for

FAST_RETRY = RetryPolicy(base_delay=timedelta(milliseconds=50),
                         max_delay=timedelta(milliseconds=200))


@contextmanager
def replicas(backend: Backend, count: int) -> Iterator[list[Box]]:
    """``count`` replicas' views of one outbox, on the wall clock (leases and retries run out)."""
    schema = backend.schema_prefix + "handoff"
    boxes = [open_box(url_of(backend), schema, SystemClock(), create=n == 0)
             for n in range(count)]
    try:
        yield boxes
    finally:
        for box in reversed(boxes):
            if box is boxes[0] and backend.kind == "postgresql":
                box.db.drop_schema()
            box.close()


@pytest.fixture
def box(backend: Backend) -> Iterator[Box]:
    with replicas(backend, 1) as boxes:
        yield boxes[0]


def publisher(box: Box, db: Database | None = None) -> Any:
    transactions = Transactions(db or box.db, box.outbox.clock, box.outbox)

    async def publish(workspace: str, payload: bytes, topic: str = "t") -> None:
        def work(uow: UnitOfWork) -> None:
            uow.publish(topic, workspace, [(payload, "")])
        await transactions.run(work)

    return publish


def commits(db: Database) -> list[int]:
    counted = [0]

    @event.listens_for(db.engine, "commit")
    def committed(conn: object) -> None:
        counted[0] += 1

    return counted


async def record_once_idle(box: Box, forwarder: Forwarder, rounds: Rounds,
                           statements: list[str]) -> None:
    """Waits until ``forwarder`` runs and is idle, then records the statements sent (upper
    case) into ``statements``."""
    await eventually(lambda: forwarder._running)
    await eventually(rounds.idle)

    @event.listens_for(box.db.engine, "before_cursor_execute")
    def executed(conn: object, cursor: object, statement: str, *rest: object) -> None:
        statements.append(statement.lstrip().upper())


async def test_rows_written_one_at_a_time_go_without_a_transaction_of_the_forwarder(
        backend: Backend, box: Box) -> None:
    got: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        got.extend(r.payload for r in rows)

    # The forwarder has a connection pool of its own, so its transactions can be counted apart
    # from the writers'.
    forwarder_db = Database(url_of(backend), schema=box.db.schema)
    forwarder = Forwarder(forwarder_db, box.outbox, "t", send, poll_interval=60,
                          settle_delay=60)
    counted = commits(forwarder_db)
    rounds = Rounds(forwarder)
    publish = publisher(box)
    task = asyncio.create_task(forwarder.run())
    try:
        await publish("ws", b"0")
        await eventually(lambda: got == [b"0"])
        # Whether row 0 went by hand-off or by a claim (written before the forwarder ran), the
        # rounds it took may still commit (its delete, the claim that follows one on
        # PostgreSQL): counted from when they are over.
        await eventually(rounds.idle)
        before = counted[0]
        for n in range(1, 20):
            await publish("ws", str(n).encode())
            await eventually(lambda n=n: len(got) == n + 1)
        await eventually(rounds.idle)
        # Neither claimed nor deleted one by one: the delivered rows wait for one delete.
        assert counted[0] == before
        assert box.queued() >= 19
    finally:
        await stop(task)
        forwarder_db.dispose()
    assert got == [str(n).encode() for n in range(20)]
    # Stopping deletes what was delivered.
    assert box.queued() == 0


async def test_delivered_rows_are_deleted_in_one_go_after_the_settle_delay(box: Box) -> None:
    got: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        got.extend(r.payload for r in rows)

    forwarder = Forwarder(box.db, box.outbox, "t", send, poll_interval=60, settle_delay=0.2)
    publish = publisher(box)
    task = asyncio.create_task(forwarder.run())
    try:
        for n in range(5):
            await publish("ws", str(n).encode())
        await eventually(lambda: len(got) == 5)
        await eventually(lambda: box.queued() == 0, timeout=5)
    finally:
        await stop(task)


async def test_rows_handed_off_behind_a_row_held_for_later_wait_for_it(box: Box) -> None:
    got: list[bytes] = []
    sending = asyncio.Event()
    release = asyncio.Event()
    refused_once = False

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        nonlocal refused_once
        if rows[0].payload == b"1" and not refused_once:
            refused_once = True
            sending.set()
            await release.wait()
            raise Later("busy")
        got.extend(r.payload for r in rows)

    forwarder = Forwarder(box.db, box.outbox, "t", send, poll_interval=0.05, retry=FAST_RETRY)
    publish = publisher(box)
    task = asyncio.create_task(forwarder.run())
    try:
        await asyncio.sleep(0)
        await publish("ws", b"1")
        await asyncio.wait_for(sending.wait(), 10)
        # Written while row 1 is in flight: handed to the forwarder, behind it.
        await publish("ws", b"2")
        await publish("other", b"x")
        await publish("ws", b"3")
        table = box.outbox.table
        with box.db.transaction() as session:
            owners = session.execute(select(table.c.lease_owner)).scalars().all()
        assert None not in owners  # all of them handed off
        release.set()  # row 1 is refused for now, and held
        await eventually(lambda: len(got) == 4, timeout=10)
    finally:
        await stop(task)
    assert [p for p in got if p != b"x"] == [b"1", b"2", b"3"] and b"x" in got


async def test_a_bad_row_handed_off_goes_to_the_dead_letters_alone(box: Box) -> None:
    got: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        got.extend(r.payload for r in rows if r.payload != b"bad")
        return [Refusal(r, "INVALID_ARGUMENT: bad") for r in rows if r.payload == b"bad"]

    forwarder = Forwarder(box.db, box.outbox, "t", send, poll_interval=60, settle_delay=0.05)
    publish = publisher(box)
    task = asyncio.create_task(forwarder.run())
    try:
        await asyncio.sleep(0)
        for payload in (b"1", b"bad", b"2"):
            await publish("ws", payload)
        await eventually(lambda: got == [b"1", b"2"])
        await eventually(lambda: box.queued() == 0, timeout=5)
    finally:
        await stop(task)
    assert [letter.payload for letter in box.letters("ws")] == [b"bad"]


async def test_a_rolled_back_unit_of_work_hands_nothing_off_and_holds_nothing_up(
        box: Box) -> None:
    got: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        got.extend(r.payload for r in rows)

    forwarder = Forwarder(box.db, box.outbox, "t", send, poll_interval=60)
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)
    task = asyncio.create_task(forwarder.run())
    try:
        await asyncio.sleep(0)

        def fails(uow: UnitOfWork) -> None:
            uow.publish("t", "ws", [(b"never", "")])
            raise ValueError("the use-case failed")

        with pytest.raises(ValueError):
            await transactions.run(fails)
        await publisher(box)("ws", b"1")
        await eventually(lambda: got == [b"1"])
    finally:
        await stop(task)
    assert box.queued() == 0


async def test_two_replicas_writing_and_forwarding_send_each_row_once_in_order(
        backend: Backend) -> None:
    if backend.kind != "postgresql":
        pytest.skip("replicas share a PostgreSQL database")
    workspaces = [f"ws-{n}" for n in range(4)]
    got: list[tuple[str, str, int]] = []

    def receiver(name: str) -> Any:
        async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
            await asyncio.sleep(0.002)  # a peer's round trip
            got.extend((name, workspace, int(r.payload)) for r in rows)
        return send

    with replicas(backend, 2) as boxes:
        forwarders = [Forwarder(box.db, box.outbox, "t", receiver(name), poll_interval=0.05)
                      for name, box in zip(("one", "two"), boxes, strict=True)]
        tasks = [asyncio.create_task(f.run()) for f in forwarders]
        publishers = [publisher(box) for box in boxes]
        sent: dict[str, list[int]] = {w: [] for w in workspaces}
        try:
            await asyncio.sleep(0)
            for n in range(300):
                workspace = workspaces[n * 7 % len(workspaces)]
                # Each write commits before the next starts, from either replica.
                await publishers[n // 10 % 2](workspace, str(n).encode())
                sent[workspace].append(n)
            await eventually(lambda: len(got) >= 300, timeout=60)
            await eventually(lambda: boxes[0].queued() == 0, timeout=30)
        finally:
            await stop(*tasks)
    counts = Counter(n for _, _, n in got)
    assert len(counts) == 300 and set(counts.values()) == {1}
    for workspace in workspaces:
        assert [n for _, w, n in got if w == workspace] == sent[workspace]
    by_replica = Counter(name for name, _, _ in got)
    assert by_replica["one"] > 0 and by_replica["two"] > 0, by_replica


async def test_a_unit_of_works_rows_are_handed_off_in_one_insert_in_their_order(
        box: Box) -> None:
    got: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        got.extend(r.payload for r in rows)

    inserts: list[str] = []

    @event.listens_for(box.db.engine, "before_cursor_execute")
    def executed(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            inserts.append(statement)

    forwarder = Forwarder(box.db, box.outbox, "t", send, poll_interval=60)
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)
    payloads = [str(n).encode() for n in range(7)]
    task = asyncio.create_task(forwarder.run())
    try:
        await eventually(lambda: forwarder._running)
        await transactions.run(lambda uow: uow.publish("t", "ws", [(p, "") for p in payloads]))
        await eventually(lambda: len(got) == len(payloads))
    finally:
        await stop(task)
    # Handed off (not left for a claim), in one statement, and sent in the order written.
    assert len(inserts) == 1 and "RETURNING" in inserts[0].upper()
    assert got == payloads


async def test_a_large_unit_of_work_is_handed_off_whole_and_each_topic_keeps_its_order(
        box: Box) -> None:
    """A batch as large as the forwarder's is handed off too (PostgreSQL: not by COPY and a
    claim), its ids in the order written across statements (SQLite: 1,000 rows per INSERT)."""
    got: dict[str, list[tuple[str, bytes]]] = {"a": [], "b": []}

    def sender(topic: str) -> Any:
        async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
            got[topic].extend((workspace, r.payload) for r in rows)
        return send

    forwarders = [Forwarder(box.db, box.outbox, topic, sender(topic), poll_interval=60,
                            batch_size=1500) for topic in ("a", "b")]
    rounds = [Rounds(f) for f in forwarders]
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)
    written = {topic: [(f"ws-{n % 3}", f"{topic}{n}".encode()) for n in range(count)]
               for topic, count in (("a", 1500), ("b", 40))}

    def work(uow: UnitOfWork) -> None:
        for topic, rows in written.items():
            for workspace, payload in rows:
                uow.publish(topic, workspace, [(payload, "")])

    tasks = [asyncio.create_task(f.run()) for f in forwarders]
    statements: list[str] = []
    try:
        await eventually(lambda: all(f._running for f in forwarders))
        await eventually(lambda: all(r.idle() for r in rounds))

        @event.listens_for(box.db.engine, "before_cursor_execute")
        def executed(conn: object, cursor: object, statement: str, *rest: object) -> None:
            statements.append(statement.lstrip().upper())

        await transactions.run(work)
        await eventually(lambda: len(got["a"]) == 1500 and len(got["b"]) == 40)
    finally:
        await stop(*tasks)
    inserts = [s for s in statements if s.startswith(("INSERT INTO OUTBOX", "COPY"))]
    assert inserts and all(s.startswith("INSERT") and "RETURNING" in s for s in inserts)
    # No claim (it leases and reads in one UPDATE ... RETURNING).
    assert not any(s.startswith("UPDATE OUTBOX SET LEASE_OWNER") and "RETURNING" in s
                   for s in statements)
    for topic, rows in written.items():
        for workspace in ("ws-0", "ws-1", "ws-2"):
            assert [r for r in got[topic] if r[0] == workspace] == \
                [r for r in rows if r[0] == workspace]


async def test_a_unit_of_work_of_several_batches_is_handed_off_and_sent_a_batch_per_call(
        box: Box) -> None:
    """A unit of work of more than a batch (a step round's facts) is handed off too, not left
    for claims (an unleased INSERT, a claim reading every payload back, a DELETE), and reaches
    the receiver in calls of at most a batch, in order; more than the forwarder's queue takes
    waits for claims, as before."""
    calls: list[list[tuple[str, bytes]]] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        calls.append([(workspace, r.payload) for r in rows])

    forwarder = Forwarder(box.db, box.outbox, "t", send, poll_interval=60, batch_size=100)
    rounds = Rounds(forwarder)
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)
    statements: list[str] = []

    def claims() -> int:
        # A claim leases and reads its rows in one UPDATE ... RETURNING.
        return sum(1 for s in statements
                   if s.startswith("UPDATE OUTBOX SET LEASE_OWNER") and "RETURNING" in s)

    def written(first: int, count: int) -> list[tuple[str, bytes]]:
        return [(f"ws-{n % 2}", f"r{n}".encode()) for n in range(first, first + count)]

    def work(rows: list[tuple[str, bytes]]) -> Any:
        def publish(uow: UnitOfWork) -> None:
            for workspace, payload in rows:
                uow.publish("t", workspace, [(payload, "")])
        return publish

    task = asyncio.create_task(forwarder.run())
    try:
        await record_once_idle(box, forwarder, rounds, statements)
        several = written(0, 350)
        await transactions.run(work(several))
        await eventually(lambda: sum(len(c) for c in calls) == 350)
        assert claims() == 0  # handed off whole
        assert max(len(c) for c in calls) <= 100
        got = [row for call in calls for row in call]
        for workspace in ("ws-0", "ws-1"):
            assert [r for r in got if r[0] == workspace] == \
                [r for r in several if r[0] == workspace]

        # Past the queue's bound (HANDOFF_QUEUE_ROWS batches): claimed, in batches.
        calls.clear()
        too_many = written(350, 450)
        await transactions.run(work(too_many))
        await eventually(lambda: sum(len(c) for c in calls) == 450)
        assert claims() > 0 and max(len(c) for c in calls) <= 100
    finally:
        await stop(task)


async def test_a_receiver_gone_after_the_first_call_of_a_hand_off_gets_no_row_twice(
        box: Box) -> None:
    """A hand-off of more than a batch goes in several calls. The receiver unreachable at the
    second call: the rows the first call delivered wait for their delete, they are not released
    with the unsent ones (review rorch: they were sent again by the next claim)."""
    delivered: list[bytes] = []
    calls = [0]

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise ConnectionError("receiver unreachable")  # neither Later nor Undeliverable
        delivered.extend(r.payload for r in rows)

    forwarder = Forwarder(box.db, box.outbox, "t", send, poll_interval=0.05,
                          batch_size=100, max_backoff=0.05)
    rounds = Rounds(forwarder)
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)

    def work(uow: UnitOfWork) -> None:
        for n in range(250):  # one workspace, 2.5 batches: handed off whole, three calls
            uow.publish("t", "ws", [(f"r{n}".encode(), "")])

    task = asyncio.create_task(forwarder.run())
    try:
        await eventually(lambda: forwarder._running)
        await eventually(rounds.idle)
        await transactions.run(work)
        await eventually(lambda: len(set(delivered)) == 250, timeout=20)
        await eventually(rounds.idle)
        await eventually(lambda: box.queued() == 0, timeout=20)
    finally:
        await stop(task)
    assert calls[0] > 2
    assert [p for p, n in Counter(delivered).items() if n > 1] == []


async def test_the_hand_off_queue_holds_no_more_than_its_bound(box: Box) -> None:
    """The bound (HANDOFF_QUEUE_ROWS batches) counts the rows a unit of work brings: a queue
    one row short of it takes no unit of several batches (review rorch: it took 799 of 400)."""
    gate = asyncio.Event()
    got: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        await gate.wait()
        got.extend(r.payload for r in rows)

    forwarder = Forwarder(box.db, box.outbox, "t", send, poll_interval=60, batch_size=100)
    rounds = Rounds(forwarder)
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)
    bound = HANDOFF_QUEUE_ROWS * 100

    def work(first: int, count: int) -> Any:
        def publish(uow: UnitOfWork) -> None:
            for n in range(first, first + count):
                uow.publish("t", "ws", [(f"r{n}".encode(), "")])
        return publish

    task = asyncio.create_task(forwarder.run())
    try:
        await eventually(lambda: forwarder._running)
        await eventually(rounds.idle)
        await transactions.run(work(0, 1))  # taken; its send waits for the gate
        await eventually(lambda: rounds.running)
        await transactions.run(work(1, bound - 1))  # queued
        await transactions.run(work(bound, bound))  # left for a claim
        queued = len(forwarder._queue)
        gate.set()
        await eventually(lambda: len(got) == 2 * bound, timeout=30)
    finally:
        await stop(task)
    assert queued <= bound
    assert len(got) == len(set(got)) == 2 * bound


async def test_a_facts_forwarder_behind_its_receiver_takes_units_past_four_batches(
        backend: Backend, box: Box) -> None:
    """Facts queue up to FACTS_HAND_OFF_BATCHES batches in memory while the receiver is behind
    (a burst: a step round's facts come 1,500 at a time), where other topics' queues hold
    HANDOFF_QUEUE_ROWS: the units behind the first one past four batches went by an unleased
    INSERT and claims reading every payload back (45-64% of orchestration's facts in a burst
    of sign-ups). Still handed off, they keep their order."""
    gate = asyncio.Event()
    got: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        await gate.wait()
        got.extend(r.payload for r in rows)

    forwarder = facts_forwarder(settings_for("orchestration", backend), box.db, box.outbox,
                                poll_interval=60)
    forwarder.send = send
    rounds = Rounds(forwarder)
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)
    statements: list[str] = []
    unit = 3 * HANDOFF_QUEUE_ROWS * forwarder.batch_size // 2  # six batches

    def work(first: int) -> Any:
        def publish(uow: UnitOfWork) -> None:
            uow.publish(FACTS_TOPIC, "ws", [(f"f{n}".encode(), "")
                                            for n in range(first, first + unit)])
        return publish

    task = asyncio.create_task(forwarder.run())
    try:
        await record_once_idle(box, forwarder, rounds, statements)
        # The first unit's first call waits for the receiver; the second unit queues behind.
        await transactions.run(work(0))
        await eventually(lambda: rounds.running)
        await transactions.run(work(unit))
        queued = len(forwarder._queue)
        gate.set()
        await eventually(lambda: len(got) == 2 * unit, timeout=30)
    finally:
        await stop(task)
    assert unit > HANDOFF_QUEUE_ROWS * forwarder.batch_size
    assert queued >= unit  # the second unit was handed off whole, behind the first
    # No claim (it leases and reads in one UPDATE ... RETURNING).
    assert not any(s.startswith("UPDATE OUTBOX SET LEASE_OWNER") and "RETURNING" in s
                   for s in statements)
    assert got == [f"f{n}".encode() for n in range(2 * unit)]


async def test_a_unit_of_works_topics_cost_one_check_and_one_insert_together(
        box: Box) -> None:
    got: dict[str, list[tuple[str, bytes]]] = {"a": [], "b": []}

    def sender(topic: str) -> Any:
        async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
            got[topic].extend((workspace, r.payload) for r in rows)
        return send

    checks: list[str] = []
    inserts: list[str] = []

    @event.listens_for(box.db.engine, "before_cursor_execute")
    def executed(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            inserts.append(statement)
        elif "outbox.lease_owner !=" in statement:
            checks.append(statement)

    forwarders = [Forwarder(box.db, box.outbox, topic, sender(topic), poll_interval=60)
                  for topic in ("a", "b")]
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)

    def work(uow: UnitOfWork) -> None:
        uow.publish("a", "ws-1", [(b"a1", ""), (b"a2", "")])
        uow.publish("b", "ws-1", [(b"b1", "")])
        uow.publish("a", "ws-2", [(b"a3", "")])

    tasks = [asyncio.create_task(f.run()) for f in forwarders]
    try:
        await eventually(lambda: all(f._running for f in forwarders))
        await transactions.run(work)
        await eventually(lambda: len(got["a"]) == 3 and len(got["b"]) == 1)
    finally:
        await stop(*tasks)
    # Both topics handed off, by one check and one insert for the whole unit of work.
    assert len(checks) == 1 and len(inserts) == 1 and "RETURNING" in inserts[0].upper()
    assert got == {"a": [("ws-1", b"a1"), ("ws-1", b"a2"), ("ws-2", b"a3")],
                   "b": [("ws-1", b"b1")]}


async def test_a_topic_with_a_row_waiting_for_a_claim_is_not_handed_off_with_the_others(
        box: Box) -> None:
    got: dict[str, list[bytes]] = {"a": [], "b": []}

    def sender(topic: str) -> Any:
        async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
            got[topic].extend(r.payload for r in rows)
        return send

    forwarders = {topic: Forwarder(box.db, box.outbox, topic, sender(topic), poll_interval=60)
                  for topic in ("a", "b")}
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)
    tasks = [asyncio.create_task(f.run()) for f in forwarders.values()]
    try:
        await eventually(lambda: all(f._running for f in forwarders.values()))
        # A row of "a" written without a hand-off (as another replica's would be) waits for a
        # claim; "a"'s rows of the unit of work must go after it, "b"'s need not wait.
        with box.db.transaction() as session:
            box.outbox.add(session, "a", "ws", [(b"older", "")])

        def work(uow: UnitOfWork) -> None:
            uow.publish("a", "ws", [(b"a1", "")])
            uow.publish("b", "ws", [(b"b1", "")])

        await transactions.run(work)
        # "a"'s new row was left for the claim that follows its wake-up, behind the older.
        await eventually(lambda: got["b"] == [b"b1"] and len(got["a"]) == 2)
        assert got["a"] == [b"older", b"a1"]
    finally:
        await stop(*tasks)
