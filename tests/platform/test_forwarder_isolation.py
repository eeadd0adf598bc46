"""One bad outbox row never blocks a forwarder: a row the receiver refuses goes to the dead
letters and every other row, of its workspace and of others, is delivered in order; a receiver
that is down or refuses everything loses nothing to the dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest
from outbox_support import Box, open_box

from cjo_orchestration.adapters.erasures import MessagesInFlight
from cjo_platform.backoff import RetryPolicy
from cjo_platform.clock import ManualClock
from cjo_platform.db.outbox import (
    Forwarder,
    Later,
    OutboxRow,
    Refusal,
    SendBatch,
    Undeliverable,
)
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.limits import MAX_CALL_PAYLOAD_BYTES
from cjo_platform.rpc.client import MAX_MESSAGE_BYTES
from cjo_platform.rpc.dead_letters import to_outbox
from support import Backend, eventually

AT_ONCE = RetryPolicy(base_delay=timedelta(0), max_delay=timedelta(0))


@pytest.fixture
def box(backend: Backend) -> Iterator[Box]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/outbox.db")
    opened = open_box(url, backend.schema_prefix + "outbox", ManualClock(), create=True)
    yield opened
    opened.close()


def forwarder(box: Box, send: SendBatch, **options: object) -> Forwarder:
    settings: dict[str, object] = {"batch_size": 100, "poll_interval": 0.01,
                                   "max_backoff": 0.02, "max_attempts": 3, "retry": AT_ONCE,
                                   "item_key": lambda row: row.payload.decode()}
    settings.update(options)
    return Forwarder(box.db, box.outbox, "t", send, **settings)  # type: ignore[arg-type]


async def drain(f: Forwarder, rounds: int = 20) -> None:
    """Run rounds until one claims nothing (a round that fails is what the worker retries)."""
    for _ in range(rounds):
        try:
            if await f.drain_once() == 0:
                return
        except Exception:
            continue
    raise AssertionError("the outbox did not drain")


async def test_a_call_refused_for_good_is_split_to_the_row_at_fault(box: Box) -> None:
    received: list[tuple[str, bytes]] = []
    calls = 0

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        nonlocal calls
        calls += 1
        if any(r.payload == b"bad" for r in rows):
            raise Undeliverable("INTERNAL: value too long for type character varying(64)")
        received.extend((workspace, r.payload) for r in rows)

    box.queue("t", "ws-a", [b"a1", b"a2"])
    box.queue("t", "ws-b", [b"b1"])
    box.queue("t", "ws-a", [b"bad", b"a4", b"a5"])
    box.queue("t", "ws-b", [b"b2"])
    await drain(forwarder(box, send))

    # Everything but the bad row arrived, each workspace in its order, the row behind the bad
    # one only after it.
    assert [p for w, p in received if w == "ws-a"] == [b"a1", b"a2", b"a4", b"a5"]
    assert [p for w, p in received if w == "ws-b"] == [b"b1", b"b2"]
    assert box.queued() == 0
    [letter] = box.letters("ws-a")
    assert (letter.source, letter.item_key, letter.payload, letter.attempts) == (
        "outbox:t", "bad", b"bad", 3)
    assert "character varying(64)" in letter.error
    assert box.letters("ws-b") == []
    assert calls < 20  # split in halves, not one call per row and round


async def test_rows_the_receiver_refuses_one_by_one_are_dead_lettered_at_once(box: Box) -> None:
    received: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        refused = [Refusal(r, "INVALID_ARGUMENT: facts[0].profile_id: too long")
                   for r in rows if r.payload == b"bad"]
        received.extend(r.payload for r in rows if r.payload != b"bad")
        return refused

    box.queue("t", "ws-a", [b"a1", b"bad", b"a3"])
    await drain(forwarder(box, send))
    assert received == [b"a1", b"a3"]
    [letter] = box.letters("ws-a")
    assert letter.payload == b"bad" and letter.attempts == 1 and "too long" in letter.error


async def test_a_row_asked_for_later_holds_its_workspace_only(box: Box) -> None:
    clock = box.outbox.clock
    assert isinstance(clock, ManualClock)
    received: list[bytes] = []
    busy = True

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        if workspace == "ws-a" and busy:
            received.extend(r.payload for r in rows[:1])
            return [Refusal(r, "UNAVAILABLE: try later", transient=True) for r in rows[1:]]
        received.extend(r.payload for r in rows)
        return []

    box.queue("t", "ws-a", [b"a1", b"a2", b"a3"])
    box.queue("t", "ws-b", [b"b1"])
    f = forwarder(box, send, retry=RetryPolicy(base_delay=timedelta(seconds=10)))
    await f.drain_once()
    # ws-a's receiver is busy: a2 and a3 wait; ws-b's row went out in the same round.
    assert received == [b"a1", b"b1"] and box.queued() == 2
    box.queue("t", "ws-b", [b"b2"])
    await f.drain_once()
    assert received == [b"a1", b"b1", b"b2"] and box.queued() == 2
    busy = False
    clock.advance(timedelta(seconds=11))
    await drain(f)
    assert [p for p in received if p.startswith(b"a")] == [b"a1", b"a2", b"a3"]
    assert box.letters("ws-a") == [] and box.queued() == 0


@pytest.mark.parametrize("later", [
    Later("DEADLINE_EXCEEDED: heavy batch", split=True),
    Later("RESOURCE_EXHAUSTED: message larger than max", split=True),
    MessagesInFlight("delivery is sending messages of 1 erased profiles"),
])
async def test_a_call_asked_for_later_holds_only_its_workspace(box: Box, later: Later) -> None:
    clock = box.outbox.clock
    assert isinstance(clock, ManualClock)
    received: list[bytes] = []
    busy = True

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        # ws-a's calls of more than one row are too heavy (when splitting may help); a call
        # starting with a1 is refused while the receiver is busy.
        if workspace == "ws-a" and ((later.split and len(rows) > 1)
                                    or (busy and rows[0].payload == b"a1")):
            raise later
        received.extend(r.payload for r in rows)

    box.queue("t", "ws-a", [b"a1", b"a2", b"a3"])
    box.queue("t", "ws-b", [b"b1", b"b2"])
    f = forwarder(box, send, retry=RetryPolicy(base_delay=timedelta(seconds=10)))
    for _ in range(3):
        await f.drain_once()  # never raises: only ws-a waits
    assert received == [b"b1", b"b2"] and box.queued() == 3
    busy = False
    clock.advance(timedelta(seconds=61))
    await drain(f)
    assert [p for p in received if p.startswith(b"a")] == [b"a1", b"a2", b"a3"]
    assert box.letters("ws-a") == [] and box.queued() == 0


async def test_claims_and_calls_are_limited_in_payload_bytes(box: Box) -> None:
    calls: list[int] = []
    received: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        calls.append(sum(len(r.payload) for r in rows))
        received.extend(r.payload for r in rows)

    rows = [f"{i:03}".encode() * 100 for i in range(30)]  # 300 bytes each
    box.queue("t", "ws-a", rows[:20])
    box.queue("t", "ws-a", [b"x" * 5000])  # larger than a call: goes alone
    box.queue("t", "ws-a", rows[20:])
    f = forwarder(box, send, max_call_bytes=1000, max_claim_bytes=3000)
    claimed = await f.drain_once()
    assert claimed == 10  # 3,000 bytes' worth, not the batch size of 100
    assert await f.run_once()  # cut short by bytes: more to send at once
    await drain(f)
    assert received == [*rows[:20], b"x" * 5000, *rows[20:]]
    assert max(c for c in calls if c != 5000) <= 1000 and 5000 in calls
    assert MAX_CALL_PAYLOAD_BYTES * 2 <= MAX_MESSAGE_BYTES


async def test_a_receiver_failing_without_reason_never_dead_letters_a_lone_row(
        box: Box) -> None:
    """A receiver replica whose database is down answers INTERNAL (an old receiver) while
    another replica takes other calls: the row is not at fault and is never dead-lettered."""
    clock = box.outbox.clock
    assert isinstance(clock, ManualClock)
    received: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        if workspace == "ws-a":
            raise Undeliverable("INTERNAL: internal error", certain=False)
        received.extend(r.payload for r in rows)

    box.queue("t", "ws-a", [b"a1"])
    f = forwarder(box, send, max_attempts=2)
    for i in range(6):
        box.queue("t", "ws-b", [f"b{i}".encode()])
        await f.drain_once()
        clock.advance(timedelta(seconds=61))
    assert len(received) == 6 and box.letters("ws-a") == [] and box.queued() == 1
    assert box.attempts(b"a1") >= 2


async def test_a_row_failing_without_reason_alone_among_taken_neighbours_is_dead_lettered(
        box: Box) -> None:
    received: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        if any(r.payload == b"bad" for r in rows):
            raise Undeliverable("INTERNAL: internal error", certain=False)
        received.extend(r.payload for r in rows)

    box.queue("t", "ws-a", [b"a1", b"bad", b"a3"])
    await drain(forwarder(box, send))
    assert received == [b"a1", b"a3"] and len(box.letters("ws-a")) == 1


async def test_a_row_taken_over_by_another_forwarder_is_settled_once(box: Box) -> None:
    clock = box.outbox.clock
    assert isinstance(clock, ManualClock)
    entered, gate = asyncio.Event(), asyncio.Event()
    first = True

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        nonlocal first
        if first:
            first = False
            entered.set()
            await gate.wait()  # the first forwarder stalls past its lease
        return [Refusal(r, "INVALID_ARGUMENT: bad") for r in rows]

    box.queue("t", "ws-a", [b"bad"])
    slow, other = forwarder(box, send), forwarder(box, send)
    stalled = asyncio.create_task(slow.drain_once())
    await entered.wait()
    clock.advance(timedelta(seconds=61))
    await other.drain_once()  # took the row over and dead-lettered it
    gate.set()
    await stalled  # the stalled one's answer comes late: the row is no longer its own
    assert len(box.letters("ws-a")) == 1 and box.queued() == 0


async def test_a_receiver_down_or_refusing_everything_dead_letters_nothing(box: Box) -> None:
    calls = 0
    error: Exception = ConnectionError("receiver down")

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        nonlocal calls
        calls += 1
        raise error

    box.queue("t", "ws-a", [b"a1", b"a2"])
    f = forwarder(box, send, max_attempts=2)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            await f.drain_once()
    assert box.queued() == 2 and box.attempts(b"a1") == 0

    # A receiver that refuses every call for good (a bug on its side, not this row): the row at
    # the head is retried, the one behind it probes, and nothing is lost to the dead letters.
    error = Undeliverable("INTERNAL: relation does not exist")
    for _ in range(6):
        await f.drain_once()
    assert box.queued() == 2 and box.letters("ws-a") == []
    assert box.attempts(b"a1") >= 2


async def test_a_refused_row_waits_while_other_workspaces_flow(box: Box) -> None:
    clock = box.outbox.clock
    assert isinstance(clock, ManualClock)
    received: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        if any(r.payload == b"bad" for r in rows):
            raise Undeliverable("INTERNAL")
        received.extend(r.payload for r in rows)

    box.queue("t", "ws-a", [b"bad", b"a2"])
    f = forwarder(box, send, retry=RetryPolicy(base_delay=timedelta(seconds=10)))
    await f.drain_once()
    box.queue("t", "ws-b", [b"b1"])
    await f.drain_once()  # ws-a waits for its retry time; ws-b does not wait behind it
    assert received == [b"b1"]
    clock.advance(timedelta(seconds=11))
    await f.drain_once()
    assert box.attempts(b"bad") == 2 and received == [b"b1"]


async def test_the_worker_keeps_forwarding_past_a_bad_row(box: Box) -> None:
    received: list[bytes] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        if any(r.payload == b"bad" for r in rows):
            raise Undeliverable("INVALID_ARGUMENT")
        received.extend(r.payload for r in rows)

    f = forwarder(box, send)
    task = asyncio.create_task(f.run())
    box.queue("t", "ws-a", [b"a1", b"bad", b"a3"])
    f.wake()
    try:
        await eventually(lambda: box.queued() == 0)
    finally:
        task.cancel()
    assert received == [b"a1", b"a3"] and len(box.letters("ws-a")) == 1


async def test_a_retried_dead_letter_is_forwarded_again(box: Box) -> None:
    received: list[bytes] = []
    refuse = True

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        refused = [Refusal(r, "FAILED_PRECONDITION: unknown journey") for r in rows
                   if refuse and r.payload == b"late"]
        received.extend(r.payload for r in rows if not refused or r is not refused[0].row)
        return refused

    f = forwarder(box, send)
    box.queue("t", "ws-a", [b"a1", b"late"])
    await drain(f)
    assert received == [b"a1"] and len(box.letters("ws-a")) == 1

    # The operator fixed the cause and retries the letter (RetryDeadLetters' replay).
    refuse = False
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)

    def retry(uow: UnitOfWork) -> None:
        to_outbox("t")(uow, box.dead_letters.take(uow.session, "ws-a", None))

    await transactions.run(retry)
    await drain(f)
    assert received == [b"a1", b"late"] and box.letters("ws-a") == []
