"""NATS for the event bus tests: is a server listening, wait until one is, a producer's outbox
to relay from, a test's streams to remove, and a running service's consumer to find (and make
its receiver ask for workspaces' messages later)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import MetaData, select

from cjo_platform.bus import Bus, BusSettings, naming
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.bus.packing import PACK_HEADER, unpack
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.dead_letters import DeadLetters, define_dead_letters
from cjo_platform.db.outbox import Forwarder, Later, Outbox, OutboxRow, Refusal, define_outbox
from cjo_platform.rpc.server import ServiceApp

NATS_URL = "nats://127.0.0.1:4222"


def nats_listening(host: str = "127.0.0.1", port: int = 4222) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class PrivateNats:
    """A JetStream server of one test's own (its store kept across restarts), for tests that
    kill or restart the broker, which no other test may see (the conftest's ``private_nats``)."""

    def __init__(self, port: int, store: Path, log: Path) -> None:
        self.port = port
        self.store = store
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port),
             "-sd", str(self.store)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_listening("127.0.0.1", self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None


def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait for a server just started (a state, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not nats_listening(host, port):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s")
        time.sleep(0.05)


class SenderOutbox:
    """A producer's outbox (delivery's, identity's) in a SQLite file of its own, for tests that
    run a producer's real forwarder against a real receiving service."""

    def __init__(self, path: Path, workspace_id: str, clock: ManualClock | None = None) -> None:
        tables = MetaData()
        clock = clock or ManualClock()
        self.workspace_id = workspace_id
        self.outbox = Outbox(define_outbox(tables), clock,
                             DeadLetters(define_dead_letters(tables), clock))
        self.db = Database(f"sqlite:///{path}", schema="")
        tables.create_all(self.db.engine)

    def queue(self, topic: str, payloads: list[bytes], workspace_id: str = "") -> None:
        with self.db.transaction() as session:
            self.outbox.add(session, topic, workspace_id or self.workspace_id,
                            [(p, "") for p in payloads])

    def queued(self) -> int:
        with self.db.transaction() as session:
            return len(session.execute(select(self.outbox.table)).all())


async def drain(forwarder: Forwarder) -> None:
    """Publish every row the forwarder has."""
    while await forwarder.drain_once():
        pass


async def drop_streams(prefix: str, topics: Iterable[str]) -> None:
    """Remove a test's streams (and its claims bucket) from the shared server."""
    bus = Bus(BusSettings(url=NATS_URL, prefix=prefix))
    js = await bus.jetstream()
    for stream in (*(naming.stream_name(prefix, t) for t in topics),
                   "KV_" + naming.stream_name(prefix, "claims")):
        with contextlib.suppress(Exception):  # never created by this test
            await js.delete_stream(stream)
    await bus.close()


# Tests' streams are capped small: JetStream reserves each stream's cap (CJO_BUS_MAX_BYTES, 1 GiB
# by default) from the server's store when it is made, and a machine with little free disk has
# a small store.
TEST_STREAM_BYTES = 64 * 1024 * 1024


def bus_env(prefix: str) -> dict[str, str]:
    """A receiving service's environment: the shared server, the test's prefix, quick
    redelivery and dead letters at the first refusal."""
    return {"CJO_EVENT_BUS": NATS_URL, "CJO_BUS_PREFIX": prefix, "CJO_BUS_PARTITIONS": "2",
            "CJO_BUS_ACK_WAIT_SECONDS": "2", "CJO_BUS_MAX_ATTEMPTS": "1",
            "CJO_BUS_MAX_BYTES": str(TEST_STREAM_BYTES)}


def bus_consumer(app: ServiceApp, topic: str) -> BusConsumer:
    """The running service's consumer of ``topic`` (among its background workers)."""
    for worker in app.background:
        owner = getattr(worker, "__self__", None)
        if isinstance(owner, BusConsumer) and owner.topic == topic:
            return owner
    raise AssertionError(f"the service consumes no {topic}")


class LaterFor:
    """Put in front of a consumer's receiver: asks for the messages of the workspaces in
    :attr:`workspaces` later (as a receiver that is busy for them), hands the others on."""

    def __init__(self, consumer: BusConsumer) -> None:
        self.workspaces: set[str] = set()
        self.asked: set[str] = set()  # the workspaces it asked later for
        receiving = consumer._receiving  # the receiver the partitions call
        self._receive = receiving.receive
        receiving.receive = self

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        if workspace_id in self.workspaces:
            self.asked.add(workspace_id)
            raise Later("the test asks for it later")
        return list(await self._receive(workspace_id, rows) or ())


async def stream_rows(bus: Bus, topic: str) -> dict[str, list[bytes]]:
    """The rows the topic's stream holds, by workspace, in stream order (packs unpacked)."""
    js = await bus.jetstream()
    stream = naming.stream_name(bus.prefix, topic)
    state = (await js.stream_info(stream)).state
    found: dict[str, list[bytes]] = {}
    for seq in range(state.first_seq, state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        workspace = (msg.subject or "").split(".")[-2]
        data = msg.data or b""
        rows = ([payload for payload, _ in unpack(data).rows]
                if (msg.headers or {}).get(PACK_HEADER) else [data])
        found.setdefault(workspace, []).extend(rows)
    return found
