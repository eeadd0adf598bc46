"""A partition's holder killed (or frozen) at any moment leaves its claim until every message
it was handed is due again at JetStream, also when its claim rounds failed and a retry was
still renewing: ``ack_wait`` after its last fetch, after the last moment its pull request could
be answered, and after its last in-progress mark, the claim has ``CLAIM_MARGIN_SECONDS`` left.
Else the next holder pulls a profile's newer messages before the ones the dead holder took
come due (review rho3: -1.9 s at the defaults, and -3.75 s once the retry failed too).

Deterministic: the consumer runs on an event loop whose clock jumps to its next timer (no
wall-clock waits), against a fake claims bucket and fake pull requests that record, at loop
time, each claim write the server applied, each pull request (sent, expires), each message
handed over and each in-progress mark. A replica killed right after any of them leaves the
claim of the last write before it: the test checks every such moment."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

import cjo_platform.bus.consumer as consumer_module
from cjo_platform.bus import Bus, BusSettings
from cjo_platform.bus.connection import CLAIM_MARGIN_SECONDS
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.bus.relay import WORKSPACE_HEADER
from cjo_platform.clock import ManualClock
from cjo_platform.db.dead_letters import DeadLetters
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import OutboxRow, Refusal


class _Jumping(selectors.SelectSelector):
    """Never waits: a wait for the next timer moves the loop's clock to it."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("nothing scheduled: the scenario would wait for ever")
        self.now += timeout
        return []


class JumpingLoop(asyncio.SelectorEventLoop):
    """An event loop on a clock of its own that jumps from timer to timer."""

    def __init__(self) -> None:
        self._jumping = _Jumping()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def run_jumping(scenario: Coroutine[Any, Any, None]) -> None:
    loop = JumpingLoop()
    try:
        loop.run_until_complete(scenario)
    finally:
        loop.run_until_complete(_cancel_left())  # a scenario that failed left the consumer
        loop.close()


async def _cancel_left() -> None:
    left = asyncio.all_tasks() - {asyncio.current_task()}
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)


async def hang() -> None:
    """A request nobody answers (cancelled by its caller's bound)."""
    await asyncio.Event().wait()


# How late the bucket answers an update it applied at once: a renewal's ``asked`` measured
# after the answer instead of before the request would move the worker's deadline past the
# fence.
LATENCY = 0.3


@dataclass
class Entry:
    value: bytes
    revision: int


class Claims:
    """The claims bucket: each write of a claim key applied is noted at loop time; from the
    ``down_after``-th claim write on, every request hangs (the bucket does not answer)."""

    def __init__(self, down_after: int) -> None:
        self.entries: dict[str, Entry] = {}
        self.revision = 0
        self.writes: list[float] = []  # loop times of the claim writes applied
        self.down_after = down_after

    @property
    def down(self) -> bool:
        return len(self.writes) >= self.down_after

    def _write(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = Entry(value, self.revision)
        if key.startswith("claim."):
            self.writes.append(asyncio.get_running_loop().time())
        return self.revision

    async def create(self, key: str, value: bytes) -> int:
        if self.down:
            await hang()
        if key in self.entries:
            raise KeyWrongLastSequenceError()
        return self._write(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        if self.down:
            await hang()
        entry = self.entries.get(key)
        if entry is None or entry.revision != last:
            raise KeyWrongLastSequenceError()
        revision = self._write(key, value)
        await asyncio.sleep(LATENCY)  # applied at once, answered late
        return revision

    async def put(self, key: str, value: bytes) -> int:
        if self.down:
            await hang()
        return self._write(key, value)

    async def get(self, key: str) -> Entry:
        if self.down:
            await hang()
        if key not in self.entries:
            raise KeyNotFoundError()
        return self.entries[key]

    async def delete(self, key: str, last: int | None = None) -> bool:
        if self.down:
            await hang()
        self.entries.pop(key, None)
        return True

    async def watch(self, keys: str, **kwargs: Any) -> Watcher:
        if self.down:
            await hang()
        return Watcher()


class Watcher:
    """A watch of the member keys that finds this replica alone."""

    def __aiter__(self) -> Watcher:
        self.done = False
        return self

    async def __anext__(self) -> None:
        if self.done:
            raise StopAsyncIteration
        self.done = True
        return None  # every current key seen

    async def stop(self) -> None:
        pass


class FakeBus:
    def __init__(self, settings: BusSettings, claims: Claims) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self._claims = claims

    async def claims(self) -> Claims:
        return self._claims

    async def ensure_consumer(self, topic: str, partition: int) -> tuple[str, str]:
        return "S", "C"

    async def client(self) -> None:
        return None

    def on_reconnect(self, callback: Any) -> Any:
        return lambda: None


class Message:
    """A delivery of one stream message; notes its in-progress marks."""

    def __init__(self, stream: Stream, sequence: int) -> None:
        self.stream = stream
        self.subject = f"cjo.test.events.p0.{sequence}"
        self.data = f"p0:{sequence}".encode()
        self.headers = {WORKSPACE_HEADER: "acme"}
        now_ns = int(asyncio.get_running_loop().time() * 1e9)
        self.reply = f"$JS.ACK.S.C.1.{sequence}.{sequence}.{now_ns}.0"

    async def ack(self) -> None:
        pass

    async def nak(self) -> None:
        pass

    async def in_progress(self) -> None:
        self.stream.marks.append(asyncio.get_running_loop().time())


class Stream:
    """The partition: a message of profile p0 published every ``every`` seconds. Notes each
    pull request (sent, expires: the server may answer it until then, also when the replica
    is frozen), each message handed over and each in-progress mark, at loop time."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.next_at = asyncio.get_running_loop().time()
        self.sequence = 0
        self.requests: list[tuple[float, float]] = []
        self.handed: list[float] = []
        self.marks: list[float] = []

    def pulls(self, nc: Any, stream: str, consumer: str) -> Pulls:
        return Pulls(self)


class Pulls:
    """PullBatches over :class:`Stream` (one message per fetch)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def start(self) -> None:
        pass

    async def outstanding(self) -> tuple[int, int]:
        return self.stream.sequence, 0

    async def stop(self) -> list[Any]:
        return []

    def interrupt(self) -> None:
        pass

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        stream = self.stream
        loop = asyncio.get_running_loop()
        now = loop.time()
        stream.requests.append((now, now + timeout))
        await asyncio.sleep(max(0.0, min(timeout, stream.next_at - now)))
        if loop.time() < stream.next_at:
            return []
        stream.sequence += 1
        stream.next_at += stream.every
        stream.handed.append(loop.time())
        return [Message(stream, stream.sequence)]


class Receiver:
    """Takes each message at once, or, with ``stall`` set, never answers once the claims
    bucket is down (a receiver call under way when the partition stops)."""

    def __init__(self, claims: Claims, stall: bool) -> None:
        self.claims = claims
        self.stall = stall

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        if self.stall and self.claims.down:
            await hang()
        return []


def slack(claims: Claims, stream: Stream, settings: BusSettings) -> dict[str, tuple[float, str]]:
    """The least claim left beyond ``ack_wait`` after what the replica was handed, marked or
    could still be handed, over every moment it may be killed (or freeze): for each of the
    three, that least slack and the moment it came at."""

    def lapse(at: float) -> float:  # the claim's earliest lapse, no write applied after ``at``
        return max(write for write in claims.writes if write <= at) + settings.claim_seconds

    due = settings.ack_wait_seconds
    handed = [(lapse(t) - (t + due), f"{t:.2f}") for t in stream.handed]
    marked = [(lapse(t) - (t + due), f"{t:.2f}") for t in stream.marks]
    # A pull request may be answered until it expires: no later claim write is counted.
    requests = [(lapse(sent) - (expires + due), f"{sent:.2f}, expiring {expires:.2f}")
                for sent, expires in stream.requests]
    return {kind: min(moments) for kind, moments in (
        ("message handed", handed), ("in-progress mark", marked),
        ("pull request sent", requests)) if moments}


def replica_on(monkeypatch: pytest.MonkeyPatch, settings: BusSettings, claims: Claims,
               stall: bool) -> tuple[Stream, BusConsumer, asyncio.Task[None]]:
    """A replica of one partition on ``claims``, running: the partition, consumer and task."""
    stream = Stream(every=settings.ack_wait_seconds / 10)
    monkeypatch.setattr(consumer_module, "PullBatches", stream.pulls)
    consumer = BusConsumer(cast(Bus, FakeBus(settings, claims)), "test.events",
                           Receiver(claims, stall), cast(Database, None),
                           cast(DeadLetters, None), ManualClock(), owner="a")
    return stream, consumer, asyncio.create_task(consumer.run())


async def claims_down(monkeypatch: pytest.MonkeyPatch, settings: BusSettings, stall: bool,
                      ) -> tuple[Claims, Stream, BusConsumer, asyncio.Task[None]]:
    """A replica of one partition, once it claimed it and renewed its claim twice and the
    claims bucket stopped answering: the bucket, the partition, the consumer and its task."""
    claims = Claims(down_after=3)
    stream, consumer, task = replica_on(monkeypatch, settings, claims, stall)
    while not claims.down:
        await asyncio.sleep(settings.renew_seconds / 10)
    return claims, stream, consumer, task


@pytest.mark.parametrize("stall", [False, True], ids=["fetching", "receiver-call-under-way"])
@pytest.mark.parametrize("ack_wait", [1.0, 2.0, 30.0, 300.0])
def test_a_killed_holders_claim_outlasts_every_message_it_was_handed(
        monkeypatch: pytest.MonkeyPatch, ack_wait: float, stall: bool) -> None:
    # The holder claims the partition and renews its claim twice; then the claims bucket stops
    # answering: the next round fails at its bound, its retries hang in turn (a retry still
    # renewing at every moment), while the worker goes on fetching (or waits for a receiver
    # call that does not end, marking its messages in progress) until it stops by itself.
    settings = BusSettings(url="nats://unused:4222", partitions=1, batch=50,
                           ack_wait_seconds=ack_wait)

    async def scenario() -> None:
        claims, stream, consumer, task = await claims_down(monkeypatch, settings, stall)
        down_at = claims.writes[-1]
        worker = consumer._partitions[0].task
        await asyncio.sleep(settings.claim_seconds + settings.renew_seconds)
        assert worker.done(), "the worker went on past its claim"
        assert consumer.claim_error is not None
        claims.down_after = 10 ** 9  # the bucket answers again: the replica stops cleanly
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        if stall:  # marked in progress while rounds failed
            assert stream.marks and max(stream.marks) > down_at
        else:  # fetched while rounds failed
            assert max(stream.handed) > down_at
        # Killed right after any moment, the replica leaves its claim longer than what it was
        # handed stays unanswered, by the margin at least (a pull request sent near the
        # deadline may expire 50 ms after it).
        short = {kind: f"{left:.2f} s left at {moment}"
                 for kind, (left, moment) in slack(claims, stream, settings).items()
                 if left < CLAIM_MARGIN_SECONDS - 0.05}
        assert not short, f"claim left beyond ack_wait: {short}"

    run_jumping(scenario())


class RenewalsDown(Claims):
    """Only claim renewals hang once down (the member key and the watch answer): the round
    that fails is one whose renewal is slow, not one that renewed first."""

    @property
    def down(self) -> bool:
        return False

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        if len(self.writes) >= self.down_after:
            await hang()
        return await super().update(key, value, last)


@pytest.mark.parametrize("ack_wait", [1.0, 10.0, 30.0])
def test_a_slow_renewal_retried_stops_no_partition(
        monkeypatch: pytest.MonkeyPatch, ack_wait: float) -> None:
    # A renewal hangs (the rest of the bucket answers): the round fails at its bound and is
    # tried again a fifth of a renewal after it began; that retry must renew before the
    # worker's deadline (claim - ack_wait - margin after the last renewal), and the worker go on.
    settings = BusSettings(url="nats://unused:4222", partitions=1, batch=50,
                           ack_wait_seconds=ack_wait)

    async def scenario() -> None:
        claims = RenewalsDown(down_after=3)
        _, consumer, task = replica_on(monkeypatch, settings, claims, stall=False)
        while consumer.claim_error is None:  # the round whose renewal hung failed at its bound
            await asyncio.sleep(settings.claim_round_seconds / 10)
        claims.down_after = 10 ** 9
        worker = consumer._partitions[0].task
        while consumer.claim_error is not None:
            await asyncio.sleep(settings.claim_round_seconds / 10)
        claim = consumer._partitions[0]
        assert claim.task is worker and not claim.stopping and not worker.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_jumping(scenario())
