"""A send round's statements keep their index probes after the messages table grew past what
it held when they were first planned (a new deployment's first minutes, a bulk load).

psycopg prepares a statement a connection runs five times, and PostgreSQL then kept a generic
plan for it until the table's next ANALYZE: made while the table was empty (every estimate one
row), the claim found each picked message's row through any index with the workspace as prefix
(ix_messages_address) and filtered the workspace's every message by its id. With thousands of
messages queued each claim took a second, for minutes, until autovacuum's ANALYZE: the
two-replica end-to-end run stalled this way. Those statements are now sent unprepared, planned
at each run (cjo_platform.db.planning). The test makes the old worst case certain: every
statement is prepared at its first run (prepare_threshold 0) and runs a dozen times on the
empty table; no statement that joins or updates messages by key may have run on a generic plan,
and auto_explain hands the test the plan each ran with once the table grew."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from test_delivery_consent_tenants import Mailbox, Storage, sending
from test_delivery_waiting_order import Subscribed, queue, send_all

from cjo.common.v1 import common_pb2
from cjo_delivery.adapters import repository
from cjo_delivery.adapters.tables import metadata
from cjo_delivery.bootstrap import MIGRATIONS
from cjo_delivery.domain.messages import Channel, NewMessage
from cjo_platform.clock import ManualClock
from cjo_platform.service import open_storage
from support import Backend, settings_for

# PostgreSQL only: SQLite's planner has no statistics here (no ANALYZE runs), so its plans do
# not depend on the table's size when they were made.
pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
WS = "ws-a"
# An index condition on the workspace alone: every message of the workspace, filtered.
WORKSPACE_ONLY = re.compile(r"Index Cond: \(\(workspace_id\)::text = [^()]*(\([^()]*\))?[^()]*\)$")


class Plans:
    """The plans auto_explain reports (as notices) while ``capturing``, and the connections."""

    def __init__(self) -> None:
        self.capturing = False
        self.found: list[str] = []
        self.connections: list[Any] = []

    def generic(self) -> list[str]:
        """The statements with parameters a connection prepared that ran on a generic plan
        (PostgreSQL counts them for the connection's life, whatever invalidated the plan
        since)."""
        found = []
        for connection in self.connections:
            with connection.cursor() as cursor:
                cursor.execute("SELECT statement FROM pg_prepared_statements "
                               "WHERE generic_plans > 0 AND cardinality(parameter_types) > 0")
                found += [row[0] for row in cursor.fetchall()]
            connection.rollback()
        return found

    def notice(self, diagnostic: Any) -> None:
        if self.capturing and (diagnostic.message_primary or "").startswith("duration:"):
            self.found.append(diagnostic.message_primary)


@contextmanager
def explained_storage(backend: Backend, *, analyze: bool = False, prepare_threshold: int | None = 0
                      ) -> Iterator[tuple[Storage, Plans]]:
    """Delivery's storage whose connections hand ``plans`` the plan of every statement they
    run (auto_explain; ``analyze``: with the rows and buffers each node read), preparing
    statements from their ``prepare_threshold``-th run (psycopg's)."""
    clock = ManualClock()
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    opened = open_storage(settings_for("delivery", backend), metadata, MIGRATIONS, clock)
    plans = Plans()
    settings = [("auto_explain.log_min_duration", "0"), ("auto_explain.log_level", "notice")]
    if analyze:
        settings += [("auto_explain.log_analyze", "on"), ("auto_explain.log_buffers", "on")]

    def connected(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.prepare_threshold = prepare_threshold
        plans.connections.append(dbapi_connection)
        dbapi_connection.add_notice_handler(plans.notice)
        with dbapi_connection.cursor() as cursor:
            cursor.execute("LOAD 'auto_explain'")
            for setting, value in settings:
                cursor.execute("SELECT set_config(%s, %s, false)", (setting, value))
        dbapi_connection.commit()

    event.listen(opened.db.engine, "connect", connected)
    opened.migrate()
    try:
        yield Storage(opened.transactions, clock), plans
    finally:
        opened.db.dispose()


@pytest.fixture
def planned(backend: Backend) -> Iterator[tuple[Storage, Plans]]:
    with explained_storage(backend) as planned:
        yield planned


async def test_a_round_probes_by_key_after_the_table_grew(
        planned: tuple[Storage, Plans]) -> None:
    storage, plans = planned
    mailbox = Mailbox()
    rounds = sending(storage, Subscribed(), mailbox)
    for n in range(12):  # every statement of a round runs on the empty table, many times
        first, second = queue(storage, f"warm-{n}-1"), queue(storage, f"warm-{n}-2")
        await send_all(storage, rounds, first, second)  # the second HELD, then released
    ids = iter(f"m{i:06d}" for i in range(8000))
    content = common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL,
        email=common_pb2.RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"),
    ).SerializeToString()
    for start in range(0, 8000, 1000):
        storage.transactions.run_sync(lambda uow, start=start: repository.queue_messages(
            uow.session, WS, [
                NewMessage(idempotency_key=f"k{i}", profile_id=f"p{i % 2000}",
                           address=f"p{i % 2000}@example.com", channel=Channel.EMAIL,
                           content=content, journey_id="", enrollment_id="")
                for i in range(start, start + 1000)],
            storage.clock.now(), "", lambda: next(ids)))
    sent = len(mailbox.sent)
    plans.capturing = True
    await rounds.run()
    plans.capturing = False
    assert len(mailbox.sent) == sent + 100  # a round's claim
    # The statements over the messages table that join or update by key: never planned
    # generically (the plan of the run captured below could be a new one only because
    # something invalidated the old: the server's other sessions' DDL does).
    joining = ("WITH picked", "UPDATE messages AS t", "UPDATE messages AS h",
               "UPDATE messages AS u")
    assert not [s for s in plans.generic() if s.lstrip().startswith(joining)]
    on_messages = [plan for plan in plans.found if "on messages" in plan]
    workspace_wide = [plan for plan in on_messages
                      if any(WORKSPACE_ONLY.search(line.strip()) for line in plan.splitlines())]
    assert not workspace_wide, "\n\n".join(workspace_wide)
    (claim,) = [plan for plan in on_messages if "WITH picked" in plan]
    (record,) = [plan for plan in on_messages if "UPDATE messages AS t" in plan]
    assert "Index Scan using messages_pkey on messages " in claim, claim
    assert "Index Scan using messages_pkey on messages t " in record, record
