"""`make bench-limits`: what this machine can do at all, measured now, for reading the other
benchmarks' figures beside it.

Each stage of cjo is bounded by a few raw operations; a benchmark's figure means little without
knowing how far it is from them on the same machine in the same sitting:

- gRPC: a 1,000-item batch call (an ``IngestEventsRequest`` of benchmark-like events parsed,
  1,000 results answered) and single-item calls with 32 in flight, to a server in another
  process over loopback (grpc.aio on both sides, as in cjo);
- a bulk insert: 1,000 event-like rows per statement (SQLAlchemy Core ``executemany``, one
  transaction each) into SQLite (a file, WAL, as cjo configures it) and PostgreSQL;
- a render: python-liquid rendering a welcome email's subject and HTML body (template parsed
  once, as cjo's content service caches it);
- SMTP: messages handed to a local aiosmtpd server over one connection;
- HTTP: JSON POSTs to a local HTTP server in another process (aiohttp, as delivery's HTTP
  providers, 64 in flight).

Other benchmarks call :func:`measure` and print its line beside their own figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import smtplib
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import grpc
import liquid
from aiosmtpd.controller import Controller
from http_sink import read_request_body
from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table, create_engine, event

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_platform.protobuf import dict_to_struct
from support import PG_URL, free_port, postgres_available

METHOD = "/bench.Limits/Ingest"
ROWS = 1000
SECONDS = 1.5  # how long each figure is measured for


def _serve(port: int, ready: Any) -> None:
    """The gRPC server process: parses each request and answers one result per event."""

    async def ingest(request: pb.IngestEventsRequest,
                     context: grpc.aio.ServicerContext) -> pb.IngestEventsResponse:
        return pb.IngestEventsResponse(results=[
            pb.IngestEventResult(event_id=e.message_id) for e in request.events])

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler("bench.Limits", {
            "Ingest": grpc.unary_unary_rpc_method_handler(
                ingest, pb.IngestEventsRequest.FromString,
                pb.IngestEventsResponse.SerializeToString)})
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


def _event(i: int) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=f"m{i}", type=event_pb2.EVENT_TYPE_TRACK, name="page_viewed",
        identifiers=[event_pb2.Identifier(type="user_id", value=f"u{i}")],
        traits=dict_to_struct({"email": f"u{i}@example.com", "first_name": f"N{i}"}),
        properties=dict_to_struct({"path": f"/p/{i % 50}", "plan": "pro"}), source="bench")


async def _rate(call: Callable[[], Awaitable[Any]], in_flight: int = 1) -> float:
    """Calls per second of ``call``, ``in_flight`` at a time, over :data:`SECONDS`."""
    done = 0
    deadline = time.perf_counter() + SECONDS

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(in_flight)))
    return done / (time.perf_counter() - start)


@contextmanager
def _server_process(target: Callable[[int, Any], None]) -> Iterator[int]:
    """``target(port, ready)`` in a process of its own (so it does not share this one's GIL);
    yields the port once the server says it is ready."""
    port = free_port()
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    server = context.Process(target=target, args=(port, ready), daemon=True)
    server.start()
    try:
        ready.wait(30)
        yield port
    finally:
        server.terminate()
        server.join()


async def grpc_limits() -> tuple[float, float]:
    """(items/s in 1,000-item calls, single-item calls/s)."""
    with _server_process(_serve) as port:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                METHOD, request_serializer=pb.IngestEventsRequest.SerializeToString,
                response_deserializer=pb.IngestEventsResponse.FromString)
            batch = pb.IngestEventsRequest(events=[_event(i) for i in range(ROWS)])
            one = pb.IngestEventsRequest(events=[_event(0)])
            await call(one)
            batches = await _rate(lambda: call(batch))
            singles = await _rate(lambda: call(one), in_flight=32)
        return batches * ROWS, singles


def insert_limit(url: str) -> float:
    """Rows/s inserted 1,000 per statement and transaction."""
    metadata = MetaData()
    table = Table(f"bench_limits_{uuid.uuid4().hex[:8]}", metadata,
                  Column("event_id", String(64), primary_key=True),
                  Column("workspace_id", String(64), nullable=False),
                  Column("profile_id", String(64), nullable=False),
                  Column("name", String(200), nullable=False),
                  Column("time", DateTime(timezone=True), nullable=False),
                  Column("properties", JSON, nullable=False))
    engine = create_engine(url)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def wal(connection: Any, _: Any) -> None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
    metadata.create_all(engine)
    now = datetime.now(UTC)
    try:
        done, n = 0, 0
        deadline = time.perf_counter() + SECONDS
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            rows = [{"event_id": f"e{n}-{i}", "workspace_id": "ws", "profile_id": f"p{i}",
                     "name": "page_viewed", "time": now,
                     "properties": {"path": f"/p/{i % 50}", "plan": "pro"}} for i in range(ROWS)]
            with engine.begin() as connection:
                connection.execute(table.insert(), rows)
            done += ROWS
            n += 1
        return done / (time.perf_counter() - start)
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def render_limit() -> float:
    """Renders/s of a welcome email's subject and HTML body, templates parsed once."""
    env = liquid.Environment()
    subject = env.from_string("Welcome, {{ profile.first_name | default: 'friend' }}!")
    body = env.from_string(
        "<html><body><h1>Hi {{ profile.first_name }}</h1>"
        "{% if profile.plan == 'pro' %}<p>Thanks for going pro.</p>{% endif %}"
        "<ul>{% for item in items %}<li>{{ item.name | upcase }}: {{ item.price }}</li>"
        "{% endfor %}</ul><a href='{{ link }}'>Start</a></body></html>")
    data = {"profile": {"first_name": "Ada", "plan": "pro"}, "link": "https://example.com/s",
            "items": [{"name": f"item {i}", "price": i * 2.5} for i in range(3)]}
    done = 0
    deadline = time.perf_counter() + SECONDS
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        subject.render(**data)
        body.render(**data)
        done += 1
    return done / (time.perf_counter() - start)


def smtp_limit() -> float:
    """Messages/s handed to a local aiosmtpd server over one connection."""

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Hi"
        message.set_content("Hello " * 50)
        done = 0
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            # smtplib writes each command and the message in pieces; asyncio (cjo's SMTP
            # client) sets TCP_NODELAY, so the raw figure does too.
            assert smtp.sock is not None
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.perf_counter() + SECONDS
            start = time.perf_counter()
            while time.perf_counter() < deadline:
                smtp.send_message(message)
                done += 1
        return done / (time.perf_counter() - start)
    finally:
        controller.stop()


def _http_server(port: int, ready: Any) -> None:
    """The HTTP server process: a raw asyncio keep-alive server answering every POST (as the
    delivery benchmark's provider sink; a threaded http.server would be the bottleneck)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request_body(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 11\r\n\r\n{\"ok\":true}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def http_limit() -> float:
    """JSON POSTs/s to a local HTTP server in another process, 64 in flight on one aiohttp
    session (delivery's HTTP client and its default concurrency)."""
    with _server_process(_http_server) as port:
        url = f"http://127.0.0.1:{port}/hook"
        payload = {"to": "+15550100", "body": "Hello " * 20}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

            async def post() -> None:
                async with session.post(url, json=payload) as reply:
                    await reply.read()

            return await _rate(post, in_flight=64)


def measure(postgresql: bool | None = None) -> dict[str, float]:
    """Every raw limit, measured now (about 12 s)."""
    grpc_items, grpc_singles = asyncio.run(grpc_limits())
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = insert_limit(f"sqlite:///{tmp}/limits.db")
    figures = {"grpc_batch_items_per_s": grpc_items, "grpc_single_calls_per_s": grpc_singles,
               "insert_sqlite_rows_per_s": sqlite}
    if postgresql if postgresql is not None else postgres_available():
        figures["insert_postgresql_rows_per_s"] = insert_limit(PG_URL)
    figures["render_per_s"] = render_limit()
    figures["smtp_messages_per_s"] = smtp_limit()
    figures["http_posts_per_s"] = asyncio.run(http_limit())
    return figures


def line(figures: dict[str, float]) -> str:
    """The one-line summary the other benchmarks print."""
    f = figures
    parts = [f"gRPC {f['grpc_batch_items_per_s']:,.0f} items/s in 1,000-item calls, "
             f"{f['grpc_single_calls_per_s']:,.0f} single-item calls/s",
             f"bulk insert SQLite {f['insert_sqlite_rows_per_s']:,.0f} rows/s"
             + (f", PostgreSQL {f['insert_postgresql_rows_per_s']:,.0f} rows/s"
                if "insert_postgresql_rows_per_s" in f else ""),
             f"Liquid email render {f['render_per_s']:,.0f}/s",
             f"SMTP {f['smtp_messages_per_s']:,.0f} messages/s (one connection)",
             f"HTTP {f['http_posts_per_s']:,.0f} POSTs/s (64 in flight)"]
    return "raw limits now: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = measure()
    print(json.dumps(figures, indent=2) if args.json else line(figures))


if __name__ == "__main__":
    main()
