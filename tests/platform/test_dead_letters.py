"""Dead letters through the shared DeadLetterService: an operator lists a workspace's letters
page by page, retries them (they go back to the outbox their forwarder drains) or purges them,
and never sees or touches another workspace's."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status
from sqlalchemy import Engine, MetaData, event, select

from cjo.common.v1 import dead_letter_service_pb2 as pb
from cjo.common.v1 import dead_letter_service_pb2_grpc as pb_grpc
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.db import Database
from cjo_platform.db.dead_letters import DeadLetters, define_dead_letters
from cjo_platform.db.idempotency import RequestLog, define_request_log
from cjo_platform.db.outbox import Outbox, define_outbox
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.rpc.auth import Authenticator
from cjo_platform.rpc.dead_letters import dead_letter_servicer, to_outbox
from cjo_platform.rpc.server import ServiceApp
from cjo_platform.rpc.status import field_violations
from support import SERVICE_TOKEN, Backend, as_service, serving, settings_for

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SOURCE = "outbox:analytics.facts"


@dataclass
class Letters:
    stub: pb_grpc.DeadLetterServiceStub
    dead_letters: DeadLetters
    outbox: Outbox
    db: Database
    clock: ManualClock

    def add(self, workspace: str, key: str, source: str = SOURCE, size: int = 0) -> None:
        with self.db.transaction() as session:
            self.dead_letters.add(session, workspace_id=workspace, source=source, item_key=key,
                                  payload=key.encode() + b" " * size,
                                  error=f"refused {key}\x00!",
                                  traceparent="00-t", attempts=3,
                                  first_failed_time=START - timedelta(minutes=5))

    def queued(self) -> list[tuple[str, str, bytes]]:
        table = self.outbox.table
        with self.db.transaction() as session:
            rows = session.execute(select(table.c.topic, table.c.workspace_id, table.c.payload)
                                   .order_by(table.c.id)).all()
        return [(r.topic, r.workspace_id, bytes(r.payload)) for r in rows]


async def _no_keys(secret: str) -> None:
    return None


@pytest.fixture
async def letters(backend: Backend) -> AsyncIterator[Letters]:
    settings: ServiceSettings = settings_for("analytics", backend)
    metadata = MetaData()
    clock = ManualClock(START)
    outbox = Outbox(define_outbox(metadata), clock)
    requests = RequestLog(define_request_log(metadata), clock)
    dead_letters = DeadLetters(define_dead_letters(metadata), clock)
    db = Database(settings.database_url, schema=settings.database_schema)
    db.create_schema()
    metadata.create_all(db.engine)
    transactions = Transactions(db, clock, outbox, requests)
    app = ServiceApp(settings=settings, db=db, servicers=[dead_letter_servicer(
        transactions, dead_letters, {SOURCE: to_outbox("analytics.facts")}, "test.cjo")],
        authenticator=Authenticator(SERVICE_TOKEN, _no_keys))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        yield Letters(pb_grpc.DeadLetterServiceStub(channel), dead_letters, outbox, db, clock)


async def test_letters_are_listed_per_workspace_page_by_page(letters: Letters) -> None:
    for n in range(5):
        letters.add("ws-a", f"a{n}")
    letters.add("ws-b", "b0")
    letters.add("ws-a", "x", source="inbox:events")

    first = await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(
        source=SOURCE, page_size=3), metadata=as_service("ws-a"))
    second = await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(
        source=SOURCE, page_size=3, page_token=first.next_page_token),
        metadata=as_service("ws-a"))
    assert [x.item_key for x in first.dead_letters] == ["a0", "a1", "a2"]
    assert [x.item_key for x in second.dead_letters] == ["a3", "a4"]
    assert second.next_page_token == ""
    letter = first.dead_letters[0]
    # What an operator needs to judge the item: its payload, error, attempts and times.
    assert letter.payload == b"a0" and letter.error == "refused a0\\0!"
    assert letter.attempts == 3 and letter.source == SOURCE and letter.traceparent == "00-t"
    assert letter.first_failed_time.ToDatetime(tzinfo=UTC) == START - timedelta(minutes=5)
    assert letter.last_failed_time.ToDatetime(tzinfo=UTC) == START

    everything = await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(),
                                                    metadata=as_service("ws-a"))
    assert [x.item_key for x in everything.dead_letters] == ["a0", "a1", "a2", "a3", "a4", "x"]
    other = await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(),
                                               metadata=as_service("ws-b"))
    assert [x.item_key for x in other.dead_letters] == ["b0"]

    with pytest.raises(grpc.aio.AioRpcError) as mixed:
        await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(
            source="inbox:events", page_token=first.next_page_token),
            metadata=as_service("ws-a"))
    assert mixed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_page_of_large_letters_fits_one_answer(letters: Letters) -> None:
    # 40 buried rows of 1 MiB (a bus message's limit): a page of 100 would be a 40 MiB answer,
    # past gRPC's 32 MiB, and the workspace's letters could not be listed at all. Pages hold
    # 4 MiB of payloads; every letter is listed once, in order.
    for i in range(40):
        letters.add("acme", f"k{i:02}", size=1024 * 1024)
    listed: list[str] = []
    token = ""
    while True:
        page = await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(
            page_token=token), metadata=as_service("acme"))
        assert 1 <= len(page.dead_letters) <= 4
        listed += [x.item_key for x in page.dead_letters]
        token = page.next_page_token
        if not token:
            break
    assert listed == [f"k{i:02}" for i in range(40)]


def database_reads(engine: Engine) -> tuple[list[int], list[str]]:
    """The bytes of binary values (payloads) each SELECT of the dead letters returns from the
    database, and its statement: each is run again on its connection, in its transaction, and
    what comes back counted (whatever the code then does with the rows)."""
    returned: list[int] = []
    statements: list[str] = []

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        if not statement.lstrip().upper().startswith("SELECT") or "dead_letters" not in statement:
            return
        statements.append(statement)
        again = cursor.connection.cursor()
        try:
            again.execute(statement, parameters)
            returned.append(sum(len(value) for row in again.fetchall() for value in row
                                if isinstance(value, bytes | bytearray | memoryview)))
        finally:
            again.close()

    event.listen(engine, "after_cursor_execute", after)
    return returned, statements


async def test_a_page_of_large_letters_reads_only_the_payloads_it_answers(
        letters: Letters) -> None:
    # ListDeadLetters read page_size + 1 whole payloads and then answered 4 MiB of them: with
    # page_size 1000, 300 buried rows of 1 MiB read 15 GiB (up to 1 GiB held at once) to list
    # them 4 a page. The sizes come first now, then only the payloads answered, and every read
    # is of the workspace's letters (the second read chose by id alone).
    for i in range(3):
        letters.add("acme", f"s{i}")
    for i in range(12):
        letters.add("acme", f"k{i:02}", size=1024 * 1024)
        letters.add("acme", f"x{i:02}", source="inbox:events", size=1024 * 1024)
    letters.add("acme", "s3")
    letters.add("other", "o0", size=1024 * 1024)
    read, statements = database_reads(letters.db.engine)
    pages: list[list[str]] = []
    token = ""
    while True:
        read.clear()
        statements.clear()
        page = await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(
            source=SOURCE, page_token=token, page_size=1000), metadata=as_service("acme"))
        pages.append([x.item_key for x in page.dead_letters])
        assert sum(read) == sum(len(x.payload) for x in page.dead_letters)
        assert statements and all("workspace_id" in s.split("WHERE", 1)[1] for s in statements)
        token = page.next_page_token
        if not token:
            break
    # 4 MiB a page at most: three letters of 1 MiB and their keys, and the small ones.
    assert pages == [["s0", "s1", "s2", "k00", "k01", "k02"], ["k03", "k04", "k05"],
                     ["k06", "k07", "k08"], ["k09", "k10", "k11", "s3"]]


async def test_retried_letters_go_back_to_the_outbox_once(letters: Letters) -> None:
    for key in ("a0", "a1", "a2"):
        letters.add("ws-a", key)
    letters.add("ws-b", "b0")
    listed = await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(),
                                                metadata=as_service("ws-a"))
    ids = [x.id for x in listed.dead_letters]
    b_id = (await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(),
                                               metadata=as_service("ws-b"))).dead_letters[0].id

    request = pb.RetryDeadLettersRequest(ids=[ids[2], ids[0], b_id], request_id="r1")
    reply = await letters.stub.RetryDeadLetters(request, metadata=as_service("ws-a"))
    # Another workspace's letter is not touched; the order is the letters' own.
    assert list(reply.retried_ids) == [ids[0], ids[2]]
    repeat = await letters.stub.RetryDeadLetters(request, metadata=as_service("ws-a"))
    assert repeat == reply
    assert letters.queued() == [("analytics.facts", "ws-a", b"a0"),
                                ("analytics.facts", "ws-a", b"a2")]

    rest = await letters.stub.RetryDeadLetters(pb.RetryDeadLettersRequest(all=True),
                                               metadata=as_service("ws-a"))
    assert list(rest.retried_ids) == [ids[1]] and not rest.more
    left = await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(),
                                              metadata=as_service("ws-a"))
    assert list(left.dead_letters) == []
    assert [k for _, w, k in letters.queued() if w == "ws-b"] == []


async def test_purged_letters_are_gone(letters: Letters) -> None:
    letters.add("ws-a", "a0")
    letters.add("ws-a", "x", source="inbox:events")
    letters.add("ws-b", "b0")
    reply = await letters.stub.PurgeDeadLetters(
        pb.PurgeDeadLettersRequest(all=True, source="inbox:events"), metadata=as_service("ws-a"))
    assert len(reply.purged_ids) == 1
    left = await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(),
                                              metadata=as_service("ws-a"))
    assert [x.item_key for x in left.dead_letters] == ["a0"]
    assert letters.queued() == []


@pytest.mark.parametrize(("request_", "field"), [
    (pb.RetryDeadLettersRequest(), "ids"),
    (pb.RetryDeadLettersRequest(ids=[1], all=True), "ids"),
    (pb.RetryDeadLettersRequest(ids=[0]), "ids[0]"),
    (pb.RetryDeadLettersRequest(all=True, source="outbox:nowhere"), "source"),
])
async def test_a_bad_retry_names_the_field(letters: Letters, request_: pb.RetryDeadLettersRequest,
                                           field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await letters.stub.RetryDeadLetters(request_, metadata=as_service("ws-a"))
    status = rpc_status.from_call(bad.value)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status is not None and field in field_violations(status)


@pytest.mark.parametrize("service", ["identity", "content", "orchestration", "delivery",
                                     "analytics", "decisioning"])
def test_every_service_serves_its_dead_letters(service: str, sqlite_backend: Backend) -> None:
    bootstrap = importlib.import_module(f"cjo_{service}.bootstrap")
    app = bootstrap.build(settings_for(service, sqlite_backend), Env({}))
    assert "cjo.common.v1.DeadLetterService" in {s.full_name for s in app.servicers}
    app.db.dispose()


@pytest.mark.parametrize("token", ["eyJhZnRlciI6IDEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwfQ==", "x",
                                   "eyJhZnRlciI6ICIxIn0="])
async def test_a_forged_page_token_names_the_field(letters: Letters, token: str) -> None:
    # {"after": 10**22}, not base64 JSON, {"after": "1"}: never INTERNAL.
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await letters.stub.ListDeadLetters(pb.ListDeadLettersRequest(page_token=token),
                                           metadata=as_service("ws-a"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(bad.value)
    assert status is not None and "page_token" in field_violations(status)
