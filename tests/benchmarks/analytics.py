"""Analytics benchmark: load facts through RecordFacts in 1,000-fact batches into an in-process
analytics server, then time a journey funnel, an experiment and an attribution report.

    .venv/bin/python tests/benchmarks/analytics.py [--facts 1000000] [--profiles 100000]
                                                    [--backend sqlite|postgresql|all]
                                                    [--merged 0.0]

The mix, per enrollment (one profile, one of three journeys, versions 1-2): entered, an
exposure to a three-arm experiment (holdout 20% / a 40% / b 40%), node visits, one or two
messages over email/SMS/push (sent, delivered, opened 45%, clicked 15%, bounced 3%), a
conversion with revenue for ~8% (more in arm b, fewer in the holdout) and an exit for ~75%.
Times are spread over 30 days. With ``--merged`` that share of the profiles is merged by
identity (p{2k+1} into p{2k}) before the reports run, so they count people through the aliases.
PostgreSQL runs when it listens on 127.0.0.1:5432.

``--small-calls 1,3,12`` measures instead what a receiver pays per call when the senders'
forwarders send a few facts at a time (a steady rate of single events): the RecordFacts
use-case alone (no gRPC), 1,000 calls of each size in a row, CPU per call from
``time.process_time``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import fact_pb2 as F
from cjo.analytics.v1 import reports_pb2 as rpb
from cjo_analytics.bootstrap import build
from cjo_platform.config import Env
from cjo_platform.logging import configure_logging
from cjo_platform.protobuf import to_timestamp
from support import as_service, drop_schemas, new_backend, postgres_available, serving, settings_for

BATCH = 1000
START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 30
ARMS = (("holdout", True, 20.0, 0.05), ("a", False, 40.0, 0.08), ("b", False, 40.0, 0.10))
CHANNELS = (1, 2, 3)  # email, SMS, push
WS = as_service("bench")


def facts(count: int, profiles: int, seed: int = 1) -> Iterator[F.Fact]:
    """``count`` facts, enrollment by enrollment."""
    rng = random.Random(seed)
    made = 0
    enrollment = 0
    while True:
        enrollment += 1
        e = f"e{enrollment}"
        profile = f"p{rng.randrange(profiles)}"
        journey = f"j{enrollment % 3}"
        version = 1 + (enrollment % 7 == 0)
        at = START + timedelta(seconds=rng.randrange(DAYS * 86400 - 4 * 3600))
        common = {"journey_id": journey, "enrollment_id": e, "journey_version": version,
                  "profile_id": profile}
        arm, control, weight, rate = ARMS[rng.choices(range(3), weights=[a[2] for a in ARMS])[0]]
        out = [
            F.Fact(type=F.FACT_TYPE_JOURNEY_ENTERED, **common),
            F.Fact(type=F.FACT_TYPE_EXPERIMENT_EXPOSED, experiment_id="exp1", arm=arm,
                   control=control, arm_weight=weight, **common),
            F.Fact(type=F.FACT_TYPE_NODE_VISITED, node_id="split", visit_sequence=1, **common),
        ]
        node = "split"
        if not control:
            for step in range(1 + (rng.random() < 0.5)):
                at += timedelta(minutes=rng.randrange(1, 120))
                channel = rng.choice(CHANNELS)
                message = {"message_id": f"{e}m{step}", "channel": channel,
                           "content_key": f"c{step}-{journey}", "variant": rng.choice("AB"),
                           "node_id": f"send{step}", **common}
                node = f"send{step}"
                out.append(F.Fact(type=F.FACT_TYPE_NODE_VISITED, node_id=node,
                                  visit_sequence=step + 2, **common))
                out.append(F.Fact(type=F.FACT_TYPE_MESSAGE_SENT, **message))
                if rng.random() < 0.03:
                    out.append(F.Fact(type=F.FACT_TYPE_MESSAGE_BOUNCED, **message))
                    continue
                out.append(F.Fact(type=F.FACT_TYPE_MESSAGE_DELIVERED, **message))
                if rng.random() < 0.45:
                    out.append(F.Fact(type=F.FACT_TYPE_MESSAGE_OPENED, **message))
                    if rng.random() < 0.33:
                        out.append(F.Fact(type=F.FACT_TYPE_MESSAGE_CLICKED, **message))
        if rng.random() < rate:
            out.append(F.Fact(type=F.FACT_TYPE_CONVERTED, revenue=round(rng.uniform(5, 200), 2),
                              currency="EUR", profile_id=profile))
        if rng.random() < 0.75:
            out.append(F.Fact(type=F.FACT_TYPE_JOURNEY_EXITED, node_id=node, exit_reason=rng.choice(
                ("completed", "completed", "exit_criteria")), **common))
        for i, fact in enumerate(out):
            fact.fact_id = f"{e}-{i}"
            fact.occur_time.CopyFrom(to_timestamp(at + timedelta(minutes=i)))
            yield fact
            made += 1
            if made == count:
                return


async def timed(label: str, call: object, request: object, repeat: int = 3) -> object:
    durations = []
    reply = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        reply = await call(request, metadata=WS, timeout=600)  # type: ignore[operator]
        durations.append(time.perf_counter() - t0)
    print(f"  {label}: best {min(durations) * 1000:,.0f} ms, median "
          f"{statistics.median(durations) * 1000:,.0f} ms", flush=True)
    return reply


async def bench(kind: str, count: int, profiles: int, merged: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend = new_backend(kind, Path(tmp))
        try:
            app = build(settings_for("analytics", backend, CJO_LOG_LEVEL="warning"), Env({}))
            async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
                await run(kind, pb_grpc.AnalyticsServiceStub(channel), count, profiles, merged)
        finally:
            drop_schemas(backend)


async def run(kind: str, stub: pb_grpc.AnalyticsServiceStub, count: int, profiles: int,
              merged: float) -> None:
    stream = facts(count, profiles)
    latencies: list[float] = []
    recorded = 0
    started = time.perf_counter()
    while True:
        batch = [f for _, f in zip(range(BATCH), stream, strict=False)]
        if not batch:
            break
        t0 = time.perf_counter()
        reply = await stub.RecordFacts(pb.RecordFactsRequest(facts=batch), metadata=WS,
                                       timeout=120)
        latencies.append(time.perf_counter() - t0)
        assert all(r.status.code == 0 and not r.duplicate for r in reply.results)
        recorded += len(batch)
    wall = time.perf_counter() - started
    calls = sum(latencies)
    print(f"[{kind}] ingest: {recorded:,} facts over {profiles:,} profiles: "
          f"{recorded / wall:,.0f} facts/s wall clock (incl. building the protos), "
          f"{recorded / calls:,.0f} facts/s inside RecordFacts; 1,000-fact batch p50 "
          f"{statistics.median(latencies) * 1000:.0f} ms, p99 "
          f"{sorted(latencies)[int(0.99 * (len(latencies) - 1))] * 1000:.0f} ms", flush=True)

    merges = [F.Fact(fact_id=f"merge{i}", type=F.FACT_TYPE_PROFILE_MERGED,
                     profile_id=f"p{2 * i + 1}", survivor_profile_id=f"p{2 * i}",
                     occur_time=to_timestamp(START)) for i in range(int(profiles * merged / 2))]
    t0 = time.perf_counter()
    for start in range(0, len(merges), BATCH):
        await stub.RecordFacts(pb.RecordFactsRequest(facts=merges[start:start + BATCH]),
                               metadata=WS, timeout=120)
    if merges:
        print(f"  {len(merges):,} merges recorded in {time.perf_counter() - t0:.2f} s",
              flush=True)

    window = rpb.TimeWindow(start_time=to_timestamp(START),
                            end_time=to_timestamp(START + timedelta(days=DAYS)))
    funnel = await timed("funnel (journey j1, all versions, daily series)",
                         stub.GetJourneyFunnel, rpb.GetJourneyFunnelRequest(
                             journey="journeys/j1", granularity=rpb.GRANULARITY_DAY,
                             window=window))
    v1 = funnel.versions[0]  # type: ignore[attr-defined]
    print(f"    v1: {v1.entered_profiles:,} entered, {v1.conversion_rate:.3f} converted, "
          f"{len(v1.nodes)} nodes", flush=True)
    await timed("channel performance (whole workspace)", stub.GetChannelPerformance,
                rpb.GetChannelPerformanceRequest())
    experiment = await timed("experiment (3 arms)", stub.GetExperimentResults,
                             rpb.GetExperimentResultsRequest(experiment_id="exp1"))
    for arm in experiment.arms:  # type: ignore[attr-defined]
        print(f"    {arm.arm}: {arm.exposures:,} exposed, rate {arm.conversion_rate:.4f}, "
              f"p {arm.p_value:.3g}, P(beat) {arm.probability_to_beat_control:.3f}", flush=True)
    last_week = rpb.TimeWindow(start_time=to_timestamp(START + timedelta(days=DAYS - 7)),
                               end_time=to_timestamp(START + timedelta(days=DAYS)))
    for label, models in (
            ("attribution, 5 heuristic models, last 7 days", [
                rpb.ATTRIBUTION_MODEL_FIRST_TOUCH, rpb.ATTRIBUTION_MODEL_LAST_TOUCH,
                rpb.ATTRIBUTION_MODEL_LINEAR, rpb.ATTRIBUTION_MODEL_TIME_DECAY,
                rpb.ATTRIBUTION_MODEL_POSITION_BASED]),
            ("attribution, all 6 models incl. data-driven, last 7 days",
             [*rpb.AttributionModel.values()][1:])):
        reply = await timed(label, stub.GetAttribution, rpb.GetAttributionRequest(
            window=last_week, lookback_days=7, models=models), repeat=2)
        print(f"    {reply.conversions:,} conversions, "  # type: ignore[attr-defined]
              f"{reply.attributed_conversions:,} attributed", flush=True)  # type: ignore[attr-defined]


def small_calls(kind: str, sizes: list[int], calls: int = 1000) -> None:
    """CPU per call of the record_facts use-case, ``calls`` calls of each size in a row."""
    from cjo_analytics.api.convert import to_fact
    from cjo_analytics.service_layer import facts as use_case

    with tempfile.TemporaryDirectory() as tmp:
        backend = new_backend(kind, Path(tmp))
        try:
            app = build(settings_for("analytics", backend, CJO_LOG_LEVEL="warning"), Env({}))
            app.migrate()
            transactions = app.servicers[0].instance.transactions
            stream = (to_fact(f) for f in facts(10**9, 100_000))
            for size in sizes:
                batches = [[next(stream) for _ in range(size)] for _ in range(calls + 50)]
                for batch in batches[:50]:  # warm: statement caches, prepared statements
                    transactions.run_sync(functools.partial(
                        use_case.record_facts, workspace_id="bench", facts=batch))
                t0 = time.process_time()
                for batch in batches[50:]:
                    transactions.run_sync(functools.partial(
                        use_case.record_facts, workspace_id="bench", facts=batch))
                cpu = time.process_time() - t0
                print(f"[{kind}] RecordFacts use-case, {size} facts per call: "
                      f"{cpu * 1e6 / calls:,.0f} us CPU per call", flush=True)
        finally:
            drop_schemas(backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=1_000_000)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    parser.add_argument("--merged", type=float, default=0.0,
                        help="share of the profiles merged into another before the reports")
    parser.add_argument("--small-calls", default="", metavar="SIZES",
                        help="comma-separated facts per call: CPU per RecordFacts use-case call")
    args = parser.parse_args()
    configure_logging("bench", fmt="console", level="warning")
    kinds = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    for kind in kinds:
        if kind == "postgresql" and not postgres_available():
            print("[postgresql] skipped: nothing listens on 127.0.0.1:5432")
            continue
        if args.small_calls:
            small_calls(kind, [int(size) for size in args.small_calls.split(",")])
        else:
            asyncio.run(bench(kind, args.facts, args.profiles, args.merged))


if __name__ == "__main__":
    main()
