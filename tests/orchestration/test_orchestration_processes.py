"""Orchestration as real processes draining a backlog of due steps: SIGKILLed in the middle and
restarted, every step runs exactly once; two processes against one PostgreSQL drain 10,000 due
timers with no step run twice.

Identity, content and delivery are in-process stand-ins (SeededIdentity answers the seeded
profiles; FakeContent renders; the recording delivery counts every send attempt per idempotency
key, and accepts each key once, as delivery does).
The backlog is written straight into orchestration's database before the processes start.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from orchestration_support import (
    FakeContent,
    FakeDelivery,
    SeededIdentity,
    fake_server,
    seeded_email,
)
from sqlalchemy import func, select

import cjo_orchestration.adapters
from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2_grpc as content_grpc
from cjo.delivery.v1 import delivery_service_pb2_grpc as delivery_grpc
from cjo.identity.v1 import identity_service_pb2_grpc as identity_grpc
from cjo_orchestration.adapters import enrollments as enrollment_store
from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters.tables import enrollments, steps
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    Journey,
    JourneyGraph,
    JourneyState,
    JourneyVersion,
    Node,
    SendAction,
    WaitAction,
)
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.config import Env
from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from support import (
    SERVICE_TOKEN,
    Backend,
    free_port,
    new_backend,
    operator_environ,
    postgres_available,
)

pytestmark = pytest.mark.e2e
MIGRATIONS = Path(str(cjo_orchestration.adapters.__file__)).parent / "migrations"
PAST = datetime(2026, 1, 1, tzinfo=UTC)


class RecordingDelivery(FakeDelivery):
    """Counts every attempt per idempotency key; optionally slow, so a test can kill the
    orchestrator while a backlog is half drained."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.attempts: Counter[str] = Counter()
        self.delay = delay

    async def BatchSendMessages(self, request: Any, context: Any) -> Any:
        for send in request.requests:
            self.attempts[send.idempotency_key] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().BatchSendMessages(request, context)


def open_db(backend: Backend) -> Database:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/orchestration.db")
    db = Database(url, schema=backend.schema_prefix + "orchestration")
    upgrade(db, MIGRATIONS)
    return db


def seed(db: Database, count: int, *, timers: bool) -> list[str]:
    """A published journey and ``count`` enrollments due now: at the send node, or (with
    ``timers``) parked at a wait node whose timer is due. Returns the enrollment ids."""
    nodes = [Node("remind", SendAction("cart", Channel.EMAIL, "done")), Node("done", ExitAction())]
    if timers:
        nodes.insert(0, Node("wait", WaitAction(duration=timedelta(hours=1),
                                                next_node_id="remind")))
    graph = JourneyGraph(EventTrigger("cart_updated"), tuple(nodes), nodes[0].id)
    journey = Journey("ws", "j1", "Backlog", JourneyState.ACTIVE, graph, 1, 1, PAST, PAST)
    ids = [f"en{i:06d}" for i in range(count)]
    with db.transaction() as session:
        journey_store.insert(session, journey)
        journey_store.add_version(session, JourneyVersion("ws", "j1", 1, graph, PAST))
        for start in range(0, count, 1000):
            enrollment_store.insert_new(session, [
                Enrollment("ws", eid, "j1", 1, f"p{eid}", EnrollmentState.ACTIVE,
                           nodes[0].id, PAST, PAST, PAST, waiting=timers,
                           traits={"email": f"{eid}@example.com"})
                for eid in ids[start:start + 1000]])
    return ids


def ended_count(db: Database) -> int:
    with db.transaction() as session:
        return int(session.execute(select(func.count()).select_from(enrollments).where(
            enrollments.c.state != EnrollmentState.ACTIVE.value)).scalar_one())


def step_counts(db: Database) -> Counter[tuple[str, str]]:
    with db.transaction() as session:
        rows = session.execute(select(steps.c.enrollment_id, steps.c.node_id)).all()
    return Counter((r.enrollment_id, r.node_id) for r in rows)


@asynccontextmanager
async def peers(delivery: RecordingDelivery) -> AsyncIterator[dict[str, str]]:
    content = FakeContent()
    content.items[("ws", "cart")] = content_item_pb2.ContentItem(
        key="cart", email=content_item_pb2.EmailTemplate(subject="Hi", html="<p>Hi</p>"))
    async with (fake_server(content, content_grpc.add_ContentServiceServicer_to_server,
                            free_port()) as content_target,
                fake_server(delivery, delivery_grpc.add_DeliveryServiceServicer_to_server,
                            free_port()) as delivery_target,
                fake_server(SeededIdentity(seeded_email),
                            identity_grpc.add_IdentityServiceServicer_to_server,
                            free_port()) as identity_target):
        yield {"CJO_CONTENT_TARGET": content_target, "CJO_DELIVERY_TARGET": delivery_target,
               "CJO_IDENTITY_TARGET": identity_target,
               # Nothing listens there: facts stay in the outbox, which is not under test.
               "CJO_ANALYTICS_TARGET": f"127.0.0.1:{free_port()}"}


class Orchestrator:
    """One `python -m cjo_orchestration` process."""

    def __init__(self, backend: Backend, targets: dict[str, str], logs: Path, name: str,
                 extra_env: dict[str, str] | None = None) -> None:
        env = operator_environ()
        env.update(backend.env())
        env.update(targets)
        env.update({
            "CJO_SERVICE_TOKEN": SERVICE_TOKEN, "CJO_LOG_FORMAT": "json",
            "CJO_LOG_LEVEL": "warning", "CJO_ORCHESTRATION_PORT": str(free_port()),
            "CJO_ORCHESTRATION_POLL_SECONDS": "0.05",
            # The service's defaults: a pass on a loaded machine takes seconds, and a lease that
            # ran out under it would hand the batch to a second claim that sends it again.
            "CJO_ORCHESTRATION_LEASE_SECONDS": "60",
            "CJO_ORCHESTRATION_PEER_TIMEOUT_SECONDS": "10",
            "CJO_ORCHESTRATION_STEP_BATCH": "100",
            "CJO_ORCHESTRATION_RETRY_BASE_SECONDS": "0.05",
            "CJO_ORCHESTRATION_RETRY_MAX_SECONDS": "0.5",
            "CJO_ORCHESTRATION_RETRY_MAX_ATTEMPTS": "1000",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        })
        self.engine = load_engine_settings(Env(env))
        self.log = logs / f"{name}.log"
        self.process = subprocess.Popen([sys.executable, "-m", "cjo_orchestration"], env=env,
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def until(check: Any, timeout: float, what: str, logs: list[Orchestrator]) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        for orchestrator in logs:
            if orchestrator.process.poll() is not None:
                raise AssertionError(f"orchestrator exited: {orchestrator.log.read_text()[-4000:]}")
        if asyncio.get_running_loop().time() > deadline:
            tails = "\n".join(o.log.read_text()[-3000:] for o in logs)
            raise AssertionError(f"{what} not reached within {timeout}s\n{tails}")
        await asyncio.sleep(0.05)


async def test_sigkill_mid_backlog_then_restart_runs_every_step_exactly_once(
        sqlite_backend: Backend, tmp_path: Path) -> None:
    count = 2000
    db = open_db(sqlite_backend)
    ids = seed(db, count, timers=False)
    delivery = RecordingDelivery(delay=0.05)
    async with peers(delivery) as targets:
        # The restarted process takes over the killed one's claims only once their leases ran
        # out: short enough for the 60 s bound below, still several times a loaded pass.
        short_lease = {"CJO_ORCHESTRATION_LEASE_SECONDS": "15",
                       "CJO_ORCHESTRATION_PEER_TIMEOUT_SECONDS": "5"}
        first = Orchestrator(sqlite_backend, targets, tmp_path, "first", short_lease)
        try:
            await until(lambda: len(delivery.messages) >= count // 4, 60, "a quarter sent",
                        [first])
        finally:
            first.kill()
        killed_at = len(delivery.messages)
        assert killed_at < count, "the backlog drained before the kill; make it bigger"
        second = Orchestrator(sqlite_backend, targets, tmp_path, "second")
        try:
            await until(lambda: ended_count(db) == count, 60, "every enrollment ended",
                        [second])
        finally:
            second.stop()
    # No missing and no duplicate sends: one accepted message per enrollment, with its key.
    assert sorted(k for _, k in delivery.messages) == sorted(f"{e}:remind:0" for e in ids)
    # Each step is recorded once per enrollment. A send the kill interrupted before its
    # outcome was recorded is retried with the same key, so delivery accepted it once.
    recorded = step_counts(db)
    assert set(recorded.values()) == {1}
    assert len(recorded) == 2 * count
    retried = sum(n - 1 for n in delivery.attempts.values())
    # At most the batches in flight when the process died: one per lane of its step worker.
    assert retried <= first.engine.step_lanes * first.engine.step_batch
    db.dispose()


@pytest.fixture
def postgres_backend(tmp_path: Path) -> Iterator[Backend]:
    if not postgres_available():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    from support import drop_schemas

    backend = new_backend("postgresql", tmp_path)
    yield backend
    drop_schemas(backend)


async def test_two_orchestrators_drain_ten_thousand_due_timers_without_running_a_step_twice(
        postgres_backend: Backend, tmp_path: Path) -> None:
    count = 10_000
    db = open_db(postgres_backend)
    ids = seed(db, count, timers=True)
    delivery = RecordingDelivery()
    async with peers(delivery) as targets:
        pair = [Orchestrator(postgres_backend, targets, tmp_path, f"o{i}",
                             {"CJO_ORCHESTRATION_STEP_BATCH": "500"}) for i in (1, 2)]
        try:
            # About 35 s on the 2-core development machine; the bound leaves room for a loaded
            # CI runner without hiding a stall.
            await until(lambda: ended_count(db) == count, 110, "every timer drained", pair)
        finally:
            for orchestrator in pair:
                orchestrator.stop()
    # Every send attempted exactly once: no two claims of one enrollment overlapped.
    assert set(delivery.attempts.values()) == {1}
    assert sorted(delivery.attempts) == sorted(f"{e}:remind:0" for e in ids)
    recorded = step_counts(db)
    assert len(recorded) == 3 * count and set(recorded.values()) == {1}
    db.dispose()
