"""Delivery benchmark: sends per second through BatchSendMessages (1,000 messages per call) to a
local sink provider, with the policies on, and the latency of a 1,000-message batch.

    .venv/bin/python tests/benchmarks/delivery.py [--messages 20000] [--batches 10]
                                                  [--backend sqlite|postgresql]
                                                  [--channel sms|email]

An in-process delivery server; the workspace's SMS provider is a generic JSON-over-HTTP provider
pointing at a keep-alive HTTP sink in its own process (so the sink does not share the event loop).
Policies on: consent is asked of a real gRPC stand-in for identity (one call per claimed batch),
a frequency cap (high enough never to defer) and quiet hours (outside them) are checked, and the
suppression list is read, for every message. ``--channel email`` sends emails instead, through
the deployment's SMTP server (CJO_SMTP_*): an aiosmtpd server in its own process.

Prints (1) sends/s from the first BatchSendMessages call to the last message the sink received,
with the p50/p99 latency of one accepting call and the CPU ms per message of this process (the
delivery server with its client and the identity stand-in; user + system, all threads: robust
on a loaded machine where sends/s is not; the event loop's thread apart: gRPC edge, policies
and provider calls, where the database work runs in threads) and of the sink's process (is the
sink the limit?), and (2) for ``--batches`` single batches of 1,000: the p50/p99 time from
the call to the last of its 1,000 messages reaching the sink. ``--lone N`` measures instead N
lone messages, one SendMessage call at a time (as a journey step sends a lone event's
message): per message the CPU ms, commits and statements of this process, and the p50/p99
time from the call's answer to the message reaching the sink (intake -> send).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "delivery"))

import grpc
from delivery_support import IdentityStandIn, identity_stand_in
from http_sink import serve_counting_sink
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, policy_pb2, provider_pb2
from cjo_delivery.adapters.tables import messages
from cjo_delivery.bootstrap import build
from cjo_platform import event_loop
from cjo_platform.config import Env
from cjo_platform.logging import configure_logging
from support import as_service, drop_schemas, free_port, new_backend, serving, settings_for

BATCH = 1000
WS = as_service("bench")


def _sink(port: int, count: Synchronized) -> None:  # type: ignore[type-arg]
    """A keep-alive HTTP/1.1 server answering every POST 200 {"id": ...}; counts requests
    (http_sink.CountingSink: the StreamReader server it replaced spent ~400 us per request,
    which held this benchmark to ~2,500 sends/s whatever delivery did)."""
    serve_counting_sink(port, count)


def _smtp_sink(port: int, count: Synchronized) -> None:  # type: ignore[type-arg]
    """An aiosmtpd server that accepts every message; counts them."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            with count.get_lock():
                count.value += 1
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    threading.Event().wait()


CHANNEL = "sms"


def request(key: str, i: int) -> pb.SendMessageRequest:
    if CHANNEL == "email":
        return pb.SendMessageRequest(
            idempotency_key=key, journey_id=f"j{i % 3}",
            recipient=message_pb2.Recipient(profile_id=f"p{i}", address=f"user{i}@example.com"),
            content=common_pb2.RenderedMessage(
                channel=common_pb2.CHANNEL_EMAIL,
                email=common_pb2.RenderedEmail(
                    subject=f"Your order {i} has shipped",
                    html=f"<p>Your order {i} has shipped. Track it in the app.</p>",
                    text=f"Your order {i} has shipped. Track it in the app.")))
    return pb.SendMessageRequest(
        idempotency_key=key, journey_id=f"j{i % 3}",
        recipient=message_pb2.Recipient(profile_id=f"p{i}", address=f"+1415555{i % 10000:04d}"),
        content=common_pb2.RenderedMessage(
            channel=common_pb2.CHANNEL_SMS,
            sms=common_pb2.RenderedSms(text=f"Your order {i} has shipped. Track it in the app.")))


async def wait_for(count: Synchronized, target: int) -> float:  # type: ignore[type-arg]
    while count.value < target:
        await asyncio.sleep(0.002)
    return time.perf_counter()


async def run(args: argparse.Namespace) -> None:
    configure_logging("bench", fmt="console", level=args.log_level)
    port = free_port()
    count: Synchronized = multiprocessing.Value("q", 0)  # type: ignore[type-arg]
    sink = multiprocessing.Process(target=_smtp_sink if CHANNEL == "email" else _sink,
                                   args=(port, count), daemon=True)
    sink.start()
    identity = IdentityStandIn(set())
    with tempfile.TemporaryDirectory() as tmp:
        backend = new_backend(args.backend, Path(tmp))
        try:
            async with identity_stand_in(identity) as target:
                settings = settings_for("delivery", backend, CJO_IDENTITY_TARGET=target,
                                        CJO_ANALYTICS_TARGET=f"127.0.0.1:{free_port()}")
                # Lone messages: the sender's default poll, so idle polls add little to them.
                env = Env({"CJO_DELIVERY_POLL_SECONDS": "0.5" if args.lone else "0.05",
                           "CJO_SMTP_PORT": str(port),
                           # The workspace's provider is the sink on 127.0.0.1.
                           "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS": "true",
                           "CJO_DELIVERY_BATCH_SIZE": str(args.claim),
                           "CJO_DELIVERY_CONCURRENCY": str(args.concurrency)})
                app = build(settings, env)
                env.check()
                async with serving(app) as address, \
                        grpc.aio.insecure_channel(address) as ch:
                    stub = pb_grpc.DeliveryServiceStub(ch)
                    await stub.CreateProvider(pb.CreateProviderRequest(
                        provider=provider_pb2.Provider(
                            channel=common_pb2.CHANNEL_SMS,
                            kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                            config={"url": f"http://127.0.0.1:{port}/send"})), metadata=WS)
                    await stub.UpdateDeliveryPolicy(pb.UpdateDeliveryPolicyRequest(
                        policy=policy_pb2.DeliveryPolicy(
                            frequency_caps=[policy_pb2.FrequencyCap(
                                channel=common_pb2.CHANNEL_EMAIL if CHANNEL == "email"
                                else common_pb2.CHANNEL_SMS, max_messages=1000,
                                window_seconds=86400)],
                            quiet_hours=policy_pb2.QuietHours(
                                start="03:00", end="03:01", default_time_zone="UTC"))),
                        metadata=WS)
                    if args.lone:
                        await lone(stub, count, args.lone, app.db.engine)
                        args.messages, args.batches = args.lone, 0
                    else:
                        await throughput(stub, count, args.messages, sink.pid)
                        if args.batches:
                            await batch_latency(stub, count, args.messages, args.batches)

                    def sent() -> int:
                        with app.db.transaction() as session:
                            return int(session.execute(select(func.count()).where(
                                messages.c.status == "sent")).scalar_one())

                    # The sink counts a message before its outcome is committed; give the last
                    # group a moment to be recorded.
                    expected = args.messages + args.batches * BATCH
                    deadline = time.perf_counter() + 30
                    while (total := await app.db.run(sent)) < expected \
                            and time.perf_counter() < deadline:
                        await asyncio.sleep(0.05)
                    print(f"check: {total} of {expected} messages SENT, sink received "
                          f"{count.value}; consent calls {len(identity.calls)}")
        finally:
            drop_schemas(backend)
            sink.terminate()


async def throughput(stub: pb_grpc.DeliveryServiceStub, count: Synchronized,  # type: ignore[type-arg]
                     n: int, sink_pid: int | None) -> None:
    calls = []
    start = time.perf_counter()
    cpu, sink_cpu, loop_cpu = _cpu_seconds(), _cpu_seconds_of(sink_pid), time.thread_time()
    for b in range(0, n, BATCH):
        t = time.perf_counter()
        reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
            requests=[request(f"t{i}", i) for i in range(b, min(b + BATCH, n))]), metadata=WS)
        calls.append(time.perf_counter() - t)
        assert all(r.status.code == 0 for r in reply.results)
    end = await wait_for(count, n)
    cpu, sink_cpu = _cpu_seconds() - cpu, _cpu_seconds_of(sink_pid) - sink_cpu
    loop_cpu = time.thread_time() - loop_cpu
    q = statistics.quantiles(calls, n=100) if len(calls) > 1 else calls * 99
    print(f"throughput: {n} messages in {end - start:.2f} s = {n / (end - start):,.0f} sends/s; "
          f"BatchSendMessages call p50 {statistics.median(calls) * 1000:.0f} ms, "
          f"p99 {q[98] * 1000:.0f} ms; CPU {cpu * 1000 / n:.3f} ms per message "
          f"(event loop {loop_cpu * 1000 / n:.3f}, the rest database threads and gRPC); "
          f"sink CPU {sink_cpu * 1e6 / n:.0f} us per message")


async def lone(stub: pb_grpc.DeliveryServiceStub, count: Synchronized,  # type: ignore[type-arg]
               n: int, engine: Engine) -> None:
    """``n`` lone messages, each sent once the one before reached the sink and was recorded."""
    tally = {"commits": 0, "statements": 0}

    def commit(conn: object) -> None:
        tally["commits"] += 1

    def statement(*args: object) -> None:
        tally["statements"] += 1

    latencies = []
    for i in range(n + 5):  # the first five warm every path
        if i == 5:
            event.listen(engine, "commit", commit)
            event.listen(engine, "after_cursor_execute", statement)
            cpu, loop_cpu = _cpu_seconds(), time.thread_time()
        base = count.value
        await stub.SendMessage(request(f"lone{i}", i), metadata=WS)
        t = time.perf_counter()
        arrived = await wait_for(count, base + 1)
        if i >= 5:
            latencies.append(arrived - t)
        await asyncio.sleep(0.02)  # the outcome recorded and the facts handed over, as a rule
    cpu, loop_cpu = _cpu_seconds() - cpu, time.thread_time() - loop_cpu
    event.remove(engine, "commit", commit)
    event.remove(engine, "after_cursor_execute", statement)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    print(f"lone messages: {n}; per message CPU {cpu * 1000 / n:.3f} ms (event loop "
          f"{loop_cpu * 1000 / n:.3f}), {tally['commits'] / n:.2f} commits, "
          f"{tally['statements'] / n:.2f} statements; SendMessage answered -> at the provider "
          f"p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms")


def _cpu_seconds() -> float:
    """User + system CPU of this process, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds_of(pid: int | None) -> float:
    """User + system CPU of process ``pid`` (Linux /proc; 0 elsewhere): the sink's, to tell
    whether the sink, not delivery, is the limit."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def batch_latency(stub: pb_grpc.DeliveryServiceStub, count: Synchronized,  # type: ignore[type-arg]
                        offset: int, batches: int) -> None:
    latencies = []
    for b in range(batches):
        base = count.value
        t = time.perf_counter()
        await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
            requests=[request(f"l{b}:{i}", offset + i) for i in range(BATCH)]), metadata=WS)
        latencies.append(await wait_for(count, base + BATCH) - t)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    print(f"1,000-message batch, call to last message at the provider: p50 "
          f"{statistics.median(latencies) * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms "
          f"over {batches} batches")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--claim", type=int, default=500, help="CJO_DELIVERY_BATCH_SIZE")
    parser.add_argument("--concurrency", type=int, default=64, help="CJO_DELIVERY_CONCURRENCY")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--channel", default="sms", choices=["sms", "email"],
                        help="sms: generic JSON HTTP provider; email: the deployment's SMTP")
    parser.add_argument("--lone", type=int, default=0, metavar="N",
                        help="instead: N lone messages, one call at a time (intake -> send)")
    parser.add_argument("--log-level", default="error")
    args = parser.parse_args()
    global CHANNEL
    CHANNEL = args.channel
    event_loop.run(run(args))  # CJO_EVENT_LOOP: the delivery server's loop


if __name__ == "__main__":
    main()
