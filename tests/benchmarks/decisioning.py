"""Decisioning benchmark: does the next best action learn, how fast does it decide, and do the
off-policy estimators tell the truth?

    .venv/bin/python tests/benchmarks/decisioning.py [--decisions 100000] [--people 25000]
                                                     [--database sqlite|postgresql] [--seed 7]
                                                     [--speed-only] [--speed-calls 300]
                                                     [--py-spy profile.svg]

``--speed-only`` runs step 5 alone (no people in identity, no learning simulation, no
evaluation): the BatchDecide figures in about a minute, to iterate on decisioning's speed.
``--py-spy FILE`` records the decisioning process with py-spy (when it is on PATH) while the
speed step runs (only the thread holding the GIL: where the CPU goes): a flame graph for
FILE.svg, else collapsed stacks (one line per stack). The speed step also prints the
decisioning process's own CPU time per 1,000 decisions (read from /proc), a figure that a
loaded, shared machine disturbs far less than the wall-clock ones.

Identity and decisioning run as separate processes (python -m cjo_<service>) on one test clock;
everything goes through their public gRPC APIs.

The generative model (the simulation's truth, which cjo never sees)
--------------------------------------------------------------------
A person has eight categorical traits, drawn independently: interest (sports, tech, fashion,
home), plan (free, pro, business), device (mobile, desktop, tablet), tier (bronze, silver,
gold), region (north, south, east, west), age_band (18-24, 25-34, 35-49, 50+), tenure (new,
established) and price_sensitivity (low, high). Each decision also has a context: the email
channel and the hour and weekday of the (simulated) time, which do not change the rates.

There are eight actions. A person's conversion probability for action a is

    p(a | person) = clip(sigmoid(BASE + sum over traits f of EFFECT[a][f][person's value of f]),
                         1%, 15%)

with hand-set effects that make the best action depend on the person (sports_gear for sports
fans, tech_gadgets for tech, loyalty_bonus for gold members, discount_10 for the price
sensitive, premium_trial for free-plan desktop users, ...) plus small seeded random effects of
every trait on every action. No single action is best for most people, so a non-contextual
bandit, which learns one rate per action, cannot reach the oracle.

A decision for a person picks an action; the person converts with its probability, after a
delay drawn from an exponential distribution (mean 15 simulated minutes, cut at 55), well
inside the point's one-hour reward window. A conversion is an `order_completed` track event
sent to identity's IngestEvents at its simulated time; identity forwards it to decisioning
(RecordEvents), which rewards the person's open decision. A decision whose hour lapses
without a conversion is a failure, learned when the window lapses.

The run
-------
1. Identity gets one `identify` event per person (their traits; their profile id comes back).
2. Decisions: every 100 decisions are one BatchDecide call (profile inline, exposure on
   decide), and simulated time moves one minute per call (the services' test clock). The
   people come in a fixed shuffled order, again and again, so a person's next decision comes
   long after their last window closed.
3. Baselines, simulated in-process on the same people in the same order with the same delays:
   an oracle (the best true rate), uniform random, a fixed A/B split between the two actions
   with the best population rate, and non-contextual Thompson sampling (Beta-Bernoulli per
   action, successes seen after their delay, failures when the window lapses).
   Each policy's expected reward per decision is the true probability of the action it
   picked, printed as a share of the oracle's, over all decisions and over the last 20%, with
   the cumulative regret (the oracle's expected conversions minus the policy's).
4. Off-policy evaluation: once every window lapsed, EvaluatePolicy for uniform random, always
   the best single action and greedy, against their true value on the logged people (the
   truth is inside the reported interval, or not).
5. Speed: BatchDecide of 100 profiles on a second point, one call at a time (latency p50 and
   p99) and four in flight (throughput).

Targets (issue 14): cjo >= 85% of the oracle over the last 20% and above non-contextual
Thompson sampling; >= 5,000 decisions/s in one process; p99 of a 100-profile batch <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import numpy as np
from google.protobuf import duration_pb2

from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import action_pb2, decision_pb2, evaluation_pb2
from cjo.decisioning.v1 import decision_point_pb2 as dp
from cjo.decisioning.v1 import decisioning_service_pb2 as dpb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dgrpc
from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as ipb
from cjo.identity.v1 import identity_service_pb2_grpc as igrpc
from cjo_platform.clock import set_test_clock_offset
from cjo_platform.protobuf import dict_to_struct, to_timestamp
from suite import SERVICES, Inbox, Suite, TraceReceiver
from support import (
    SERVICE_TOKEN,
    as_service,
    drop_schemas,
    free_port,
    new_backend,
    operator_environ,
    postgres_available,
)

WS = as_service("bench")
POINT, SPEED_POINT = "next-offer", "next-offer-speed"
REWARD_EVENT = "order_completed"
BATCH = 100
STEP = timedelta(minutes=1)  # simulated time per BatchDecide call
WINDOW = timedelta(hours=1)
MEAN_DELAY, MAX_DELAY = timedelta(minutes=15), timedelta(minutes=55)
START = datetime(2026, 1, 5, 8, tzinfo=UTC)  # a Monday morning
INGEST_BATCH = 1000

TRAITS: dict[str, tuple[str, ...]] = {
    "interest": ("sports", "tech", "fashion", "home"),
    "plan": ("free", "pro", "business"),
    "device": ("mobile", "desktop", "tablet"),
    "tier": ("bronze", "silver", "gold"),
    "region": ("north", "south", "east", "west"),
    "age_band": ("18-24", "25-34", "35-49", "50+"),
    "tenure": ("new", "established"),
    "price_sensitivity": ("low", "high"),
}
ACTIONS = ("discount_10", "free_shipping", "bundle_deal", "loyalty_bonus", "premium_trial",
           "sports_gear", "tech_gadgets", "fashion_drop")
BASE = -3.9
# The effects that make the best action depend on the person (logit units).
EFFECTS: dict[str, dict[tuple[str, str], float]] = {
    "discount_10": {("price_sensitivity", "high"): 1.3, ("price_sensitivity", "low"): -0.6,
                    ("tenure", "new"): 0.4},
    "free_shipping": {("device", "mobile"): 0.9, ("region", "south"): 0.5,
                      ("region", "north"): 0.3},
    "bundle_deal": {("interest", "home"): 1.5, ("plan", "business"): 0.6},
    "loyalty_bonus": {("tier", "gold"): 1.6, ("tier", "silver"): 0.7, ("tier", "bronze"): -0.7,
                      ("tenure", "established"): 0.3},
    "premium_trial": {("plan", "free"): 1.0, ("device", "desktop"): 0.7,
                      ("plan", "business"): -1.2},
    "sports_gear": {("interest", "sports"): 1.9, ("interest", "fashion"): -0.4},
    "tech_gadgets": {("interest", "tech"): 1.9, ("age_band", "50+"): -0.5},
    "fashion_drop": {("interest", "fashion"): 1.9, ("age_band", "18-24"): 0.5,
                     ("age_band", "25-34"): 0.3},
}
MIN_RATE, MAX_RATE = 0.01, 0.15
RANDOM_EFFECT_SD = 0.15


@dataclass
class World:
    """The population and its true conversion probabilities, (people, actions)."""

    traits: list[dict[str, str]]
    rates: np.ndarray

    @property
    def oracle(self) -> np.ndarray:
        return self.rates.max(axis=1)


def build_world(people: int, rng: np.random.Generator) -> World:
    names = list(TRAITS)
    codes = np.stack([rng.integers(0, len(TRAITS[n]), people) for n in names], axis=1)
    logits = np.full((people, len(ACTIONS)), BASE)
    for a, action in enumerate(ACTIONS):
        for f, name in enumerate(names):
            values = TRAITS[name]
            effect = rng.normal(0.0, RANDOM_EFFECT_SD, len(values))
            for v, value in enumerate(values):
                effect[v] += EFFECTS[action].get((name, value), 0.0)
            logits[:, a] += effect[codes[:, f]]
    rates = np.clip(1.0 / (1.0 + np.exp(-logits)), MIN_RATE, MAX_RATE)
    traits = [{name: TRAITS[name][codes[p, f]] for f, name in enumerate(names)}
              for p in range(people)]
    return World(traits, rates)


def delay(rng: np.random.Generator) -> timedelta:
    seconds = rng.exponential(MEAN_DELAY.total_seconds())
    return timedelta(seconds=min(seconds, MAX_DELAY.total_seconds()))


# --- baselines ---------------------------------------------------------------------------------


class ThompsonBaseline:
    """Non-contextual Thompson sampling: Beta(1 + successes, 1 + failures) per action, fed
    with the same delays as cjo (a success when it converts, a failure when the window
    lapses)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.successes = np.zeros(len(ACTIONS))
        self.failures = np.zeros(len(ACTIONS))
        self.pending: list[tuple[datetime, int, int, bool]] = []  # (when, seq, action, success)
        self._seq = 0

    def learn_until(self, now: datetime) -> None:
        while self.pending and self.pending[0][0] <= now:
            _, _, action, success = heapq.heappop(self.pending)
            if success:
                self.successes[action] += 1
            else:
                self.failures[action] += 1

    def pick(self, count: int) -> np.ndarray:
        draws = self.rng.beta(1 + self.successes, 1 + self.failures, (count, len(ACTIONS)))
        return draws.argmax(axis=1)

    def outcome(self, at: datetime, action: int, converted: bool, after: timedelta) -> None:
        """Seen ``after`` the decision: the conversion's delay, or the window."""
        self._seq += 1
        heapq.heappush(self.pending, (at + after, self._seq, action, converted))


@dataclass
class Tally:
    """Expected reward (the true probability of the picked action) per decision."""

    name: str
    expected: list[float] = field(default_factory=list)

    def add(self, values: Sequence[float]) -> None:
        self.expected.extend(values)


def share_row(tally: Tally, oracle: Tally) -> str:
    n = len(tally.expected)
    tail = max(1, n // 5)
    got, best = np.asarray(tally.expected), np.asarray(oracle.expected)
    return (f"  {tally.name:<28} {got.mean():.4f} per decision  "
            f"{got.sum() / best.sum():6.1%} of oracle overall  "
            f"{got[-tail:].sum() / best[-tail:].sum():6.1%} over the last 20%  "
            f"regret {best.sum() - got.sum():8,.0f}")


# --- the services ----------------------------------------------------------------------------


async def start_services(kind: str, tmp: Path) -> tuple[Suite, Any]:
    backend = new_backend(kind, tmp)
    ports = {name: free_port() for name in SERVICES}
    env = operator_environ()
    env.update(backend.env())
    clock_file = tmp / "test-clock"
    set_test_clock_offset(clock_file, START - datetime.now(UTC))
    env.update({
        "CJO_SERVICE_TOKEN": SERVICE_TOKEN, "CJO_LOG_FORMAT": "json", "CJO_LOG_LEVEL": "warning",
        "CJO_SHUTDOWN_GRACE_SECONDS": "2", "PYTHONUNBUFFERED": "1",
        "CJO_ENV": "test", "CJO_TEST_CLOCK_FILE": str(clock_file),
        **{f"CJO_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    })
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    suite = Suite(ports, env, TraceReceiver(), Inbox(), logs, clock_file=clock_file,
                  process_ports={"identity": ports["identity"],
                                 "decisioning": ports["decisioning"]})
    for name in ("decisioning", "identity"):
        suite.start(name)
    await asyncio.gather(*(suite.wait_ready(name) for name in ("decisioning", "identity")))
    return suite, backend


def set_clock(suite: Suite, now: datetime) -> None:
    assert suite.clock_file is not None
    set_test_clock_offset(suite.clock_file, now - datetime.now(UTC))


async def define_point(stub: dgrpc.DecisioningServiceStub, key: str) -> None:
    for action in ACTIONS:
        await stub.UpdateAction(dpb.UpdateActionRequest(
            action=action_pb2.Action(name=f"actions/{action}", key=action,
                                     display_name=action.replace("_", " ")),
            allow_missing=True), metadata=WS)
    await stub.CreateDecisionPoint(dpb.CreateDecisionPointRequest(decision_point=dp.DecisionPoint(
        key=key, actions=ACTIONS, max_actions=len(ACTIONS),
        exploration=dp.Exploration(method=dp.EXPLORATION_METHOD_THOMPSON),
        model=dp.Model(features=list(TRAITS)),
        reward=dp.Reward(event_name=REWARD_EVENT,
                         window=duration_pb2.Duration(seconds=int(WINDOW.total_seconds()))),
        exposure=dp.EXPOSURE_MODE_ON_DECIDE)), metadata=WS)


async def create_people(stub: igrpc.IdentityServiceStub, world: World) -> list[str]:
    """One identify event per person; identity's profile id of each."""
    ids: list[str] = []
    for offset in range(0, len(world.traits), INGEST_BATCH):
        events = [event_pb2.Event(
            message_id=f"identify-{p}", type=event_pb2.EVENT_TYPE_IDENTIFY,
            timestamp=to_timestamp(START - timedelta(days=1)), source="crm",
            identifiers=[event_pb2.Identifier(type="user_id", value=f"u{p}")],
            traits=dict_to_struct(dict(world.traits[p])))
            for p in range(offset, min(offset + INGEST_BATCH, len(world.traits)))]
        reply = await stub.IngestEvents(ipb.IngestEventsRequest(events=events), metadata=WS,
                                        timeout=120)
        for result in reply.results:
            if result.status.code != 0:
                raise AssertionError(f"identify refused: {result.status.message}")
            ids.append(result.profile_id)
    return ids


def conversion(person: int, at: datetime, seq: int) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=f"order-{seq}", type=event_pb2.EVENT_TYPE_TRACK, name=REWARD_EVENT,
        timestamp=to_timestamp(at), source="web",
        identifiers=[event_pb2.Identifier(type="user_id", value=f"u{person}")],
        properties=dict_to_struct({"revenue": 42.0}))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Logged:
    """What the simulation keeps of each cjo decision, for the off-policy truth."""

    people: list[int] = field(default_factory=list)
    propensities: list[np.ndarray] = field(default_factory=list)  # by ACTIONS order


async def simulate(suite: Suite, decisions: int, world: World, profile_ids: list[str],
                   rng: np.random.Generator, decisioning: dgrpc.DecisioningServiceStub,
                   identity: igrpc.IdentityServiceStub) -> tuple[list[Tally], Logged, list[float]]:
    people = len(world.traits)
    order = rng.permutation(people)
    profiles = [dict_to_struct(dict(t)) for t in world.traits]
    oracle, uniform, ab, thompson, cjo = (Tally("oracle (knows the true rates)"),
                                          Tally("uniform random"), Tally("fixed A/B split"),
                                          Tally("non-contextual Thompson"), Tally("cjo"))
    population = world.rates.mean(axis=0)
    split = np.argsort(population)[-2:]  # the two best actions on average
    baseline = ThompsonBaseline(np.random.default_rng(rng.integers(1 << 32)))
    outcomes = np.random.default_rng(rng.integers(1 << 32))
    pending: list[tuple[datetime, int, int]] = []  # conversions to send: (when, seq, person)
    latencies: list[float] = []
    logged = Logged()
    seq = 0
    calls = math.ceil(decisions / BATCH)
    began = time.perf_counter()
    for call in range(calls):
        now = START + call * STEP
        set_clock(suite, now)
        due: list[event_pb2.Event] = []
        while pending and pending[0][0] <= now:
            at, number, person = heapq.heappop(pending)
            due.append(conversion(person, at, number))
        for offset in range(0, len(due), INGEST_BATCH):
            await identity.IngestEvents(ipb.IngestEventsRequest(
                events=due[offset:offset + INGEST_BATCH]), metadata=WS, timeout=120)
        count = min(BATCH, decisions - call * BATCH)
        batch = [int(order[(call * BATCH + i) % people]) for i in range(count)]
        request = dpb.BatchDecideRequest(
            decision_point=f"decisionPoints/{POINT}",
            context=decision_pb2.DecisionContext(channel=common_pb2.CHANNEL_EMAIL),
            items=[dpb.DecideItem(profile_id=profile_ids[p], profile=profiles[p],
                                  request_id=f"sim-{call}-{i}") for i, p in enumerate(batch)])
        started = time.perf_counter()
        reply = await decisioning.BatchDecide(request, metadata=WS, timeout=60)
        latencies.append(time.perf_counter() - started)
        picked: list[int] = []
        for p, result in zip(batch, reply.results, strict=True):
            if result.status.code != 0 or not result.decision.actions:
                raise AssertionError(f"no decision for a person: {result}")
            ranked = result.decision.actions
            picked.append(ACTIONS.index(ranked[0].action))
            propensities = np.zeros(len(ACTIONS))
            for r in ranked:
                propensities[ACTIONS.index(r.action)] = r.propensity
            logged.people.append(p)
            logged.propensities.append(propensities)
        rates = world.rates[batch]
        chosen = rates[np.arange(count), picked]
        cjo.add(chosen)
        for p, rate in zip(batch, chosen, strict=True):
            if outcomes.random() < rate:
                seq += 1
                heapq.heappush(pending, (now + delay(outcomes), seq, p))
        # The baselines, on the same people at the same simulated time.
        oracle.add(rates.max(axis=1))
        uniform.add(rates.mean(axis=1))
        ab.add(rates[np.arange(count), split[np.arange(count) % 2]])
        baseline.learn_until(now)
        ts_picks = baseline.pick(count)
        ts_rates = rates[np.arange(count), ts_picks]
        thompson.add(ts_rates)
        for action, rate in zip(ts_picks, ts_rates, strict=True):
            converted = outcomes.random() < rate
            baseline.outcome(now, int(action), converted, delay(outcomes) if converted else WINDOW)
        if (call + 1) % 100 == 0:
            recent = np.mean(cjo.expected[-10_000:]) / np.mean(oracle.expected[-10_000:])
            print(f"    {call + 1:,}/{calls:,} calls, {time.perf_counter() - began:.0f} s; cjo "
                  f"over the last 10,000 decisions: {recent:.1%} of oracle", flush=True)
    # The last conversions, then every window lapses.
    end = START + calls * STEP
    late = [conversion(person, at, number) for at, number, person in sorted(pending)]
    for offset in range(0, len(late), INGEST_BATCH):
        set_clock(suite, end)
        await identity.IngestEvents(ipb.IngestEventsRequest(
            events=late[offset:offset + INGEST_BATCH]), metadata=WS, timeout=120)
    return [oracle, uniform, ab, thompson, cjo], logged, latencies


async def all_outcomes_known(stub: dgrpc.DecisioningServiceStub, decisions: int,
                             stall: float = 60) -> dpb.GetDecisionReportResponse:
    """The report once every decision's outcome is known, or once none was learned for
    ``stall`` seconds (the estimates then rest on the decisions learned so far)."""
    known, since = -1, time.perf_counter()
    while True:
        report = await stub.GetDecisionReport(dpb.GetDecisionReportRequest(
            decision_point=f"decisionPoints/{POINT}"), metadata=WS)
        now_known = sum(a.rewards + a.failures for a in report.actions)
        if now_known != known:
            known, since = now_known, time.perf_counter()
        if known >= decisions or time.perf_counter() - since > stall:
            return report
        await asyncio.sleep(1.0)


async def evaluate(stub: dgrpc.DecisioningServiceStub, world: World, logged: Logged) -> None:
    rates = world.rates[logged.people]
    propensities = np.stack(logged.propensities)
    best_single = int(world.rates.mean(axis=0).argmax())
    # Ties (every action at the prior before the first outcome) go to the smallest key, as the
    # service breaks them: argmax in ACTIONS order picked another action there, and the
    # greedy truth was off by the early decisions.
    by_key = np.argsort(ACTIONS)
    greedy = by_key[propensities[:, by_key].argmax(axis=1)]
    cases = [
        ("uniform random", evaluation_pb2.TargetPolicy(
            uniform_random=evaluation_pb2.UniformRandomPolicy()), float(rates.mean())),
        (f"always {ACTIONS[best_single]}", evaluation_pb2.TargetPolicy(
            always_action=ACTIONS[best_single]), float(rates[:, best_single].mean())),
        ("greedy (logged propensities)", evaluation_pb2.TargetPolicy(
            greedy=evaluation_pb2.GreedyPolicy()),
         float(rates[np.arange(len(rates)), greedy].mean())),
    ]
    print("  off-policy evaluation on the logged decisions (truth = the simulation's expected "
          "reward of the policy on the same people):")
    for name, policy, truth in cases:
        started = time.perf_counter()
        reply = await stub.EvaluatePolicy(dpb.EvaluatePolicyRequest(
            decision_point=f"decisionPoints/{POINT}", policy=policy), metadata=WS, timeout=600)
        took = time.perf_counter() - started
        print(f"    {name:<30} truth {truth:.4f}; {reply.decisions:,} decisions, "
              f"{reply.uncovered:,} uncovered, ESS {reply.effective_sample_size:,.0f}, "
              f"{took:.1f} s")
        print(f"      expected ESS {reply.expected_effective_sample_size:,.0f}, max weight "
              f"{reply.max_weight:,.0f}, "
              + ("reliable" if reply.reliable else "unreliable: " + ", ".join(reply.warnings)))
        for label in ("ips", "snips", "doubly_robust"):
            e = getattr(reply, label)
            inside = "inside" if e.lower <= truth <= e.upper else "OUTSIDE"
            print(f"      {label:<14} {e.value:.4f} [{e.lower:.4f}, {e.upper:.4f}]  "
                  f"truth {inside}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def speed(stub: dgrpc.DecisioningServiceStub, world: World, profile_ids: list[str],
                calls: int, pid: int, py_spy: str = "") -> None:
    await define_point(stub, SPEED_POINT)
    profiles = [dict_to_struct(dict(t)) for t in world.traits]
    people = len(profiles)

    def request(call: int) -> dpb.BatchDecideRequest:
        return dpb.BatchDecideRequest(
            decision_point=f"decisionPoints/{SPEED_POINT}",
            context=decision_pb2.DecisionContext(channel=common_pb2.CHANNEL_EMAIL),
            items=[dpb.DecideItem(profile_id=profile_ids[(call * BATCH + i) % people],
                                  profile=profiles[(call * BATCH + i) % people])
                   for i in range(BATCH)])

    requests = [request(c) for c in range(calls)]
    for r in requests[:5]:  # warm-up: caches, models, connections
        await stub.BatchDecide(r, metadata=WS)
    recorder = None
    if py_spy:
        if shutil.which("py-spy") is None:
            print("  (py-spy is not on PATH: no profile recorded)")
        else:
            recorder = subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "--output", py_spy, "--rate", "200",
                 "--nonblocking", "--gil", "--format",
                 "flamegraph" if py_spy.endswith(".svg") else "raw"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu_began = cpu_seconds(pid)
    latencies: list[float] = []
    began = time.perf_counter()
    for r in requests:
        started = time.perf_counter()
        await stub.BatchDecide(r, metadata=WS, timeout=60)
        latencies.append(time.perf_counter() - started)
    sequential = calls * BATCH / (time.perf_counter() - began)

    queue = list(requests)

    async def caller() -> None:
        while queue:
            await stub.BatchDecide(queue.pop(), metadata=WS, timeout=60)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(4)))
    parallel = calls * BATCH / (time.perf_counter() - began)
    cpu = cpu_seconds(pid) - cpu_began
    if recorder is not None:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        recorder.wait(timeout=60)
        print(f"  py-spy profile of the decisioning process: {py_spy}")
    print(f"  BatchDecide of {BATCH} (one decisioning process): one call at a time "
          f"{sequential:,.0f} decisions/s, p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms; four in flight "
          f"{parallel:,.0f} decisions/s; decisioning CPU {cpu * 1000 / (2 * calls * BATCH):.3f} s "
          f"per 1,000 decisions ({2 * calls * BATCH / cpu:,.0f} decisions per CPU-second)")


async def speed_only(kind: str, people: int, seed: int, calls: int, py_spy: str) -> None:
    """Step 5 alone: decisioning (and identity, which the suite starts with it) with inline
    profiles, so no person needs to exist in identity."""
    world = build_world(people, np.random.default_rng(seed))
    print(f"decisioning [{kind}] speed only: {people:,} people, {calls} calls of {BATCH}")
    with tempfile.TemporaryDirectory() as tmp:
        suite, backend = await start_services(kind, Path(tmp))
        try:
            async with grpc.aio.insecure_channel(suite.target("decisioning")) as dch:
                await speed(dgrpc.DecisioningServiceStub(dch), world,
                            [f"speed-{p}" for p in range(people)], calls,
                            suite.processes["decisioning"].pid, py_spy)
        finally:
            for name in list(suite.processes):
                await suite.stop(name)
            drop_schemas(backend)


async def bench(kind: str, decisions: int, people: int, seed: int, calls: int = 300,
                py_spy: str = "") -> None:
    rng = np.random.default_rng(seed)
    world = build_world(people, rng)
    best_single = world.rates.mean(axis=0).max()
    best_counts = np.bincount(world.rates.argmax(axis=1), minlength=len(ACTIONS))
    print(f"decisioning [{kind}]: {people:,} people, {len(ACTIONS)} actions, rates "
          f"{world.rates.min():.1%}-{world.rates.max():.1%}; oracle "
          f"{world.oracle.mean():.4f}, best single action {best_single:.4f} "
          f"({best_single / world.oracle.mean():.0%} of oracle); best action by person: "
          + ", ".join(f"{a} {n / people:.0%}" for a, n in zip(ACTIONS, best_counts,
                                                               strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        suite, backend = await start_services(kind, Path(tmp))
        try:
            async with grpc.aio.insecure_channel(suite.target("decisioning")) as dch, \
                    grpc.aio.insecure_channel(suite.target("identity")) as ich:
                decisioning = dgrpc.DecisioningServiceStub(dch)
                identity = igrpc.IdentityServiceStub(ich)
                await define_point(decisioning, POINT)
                began = time.perf_counter()
                profile_ids = await create_people(identity, world)
                print(f"  {people:,} profiles created in identity in "
                      f"{time.perf_counter() - began:.1f} s")
                began = time.perf_counter()
                tallies, logged, latencies = await simulate(
                    suite, decisions, world, profile_ids, rng, decisioning, identity)
                took = time.perf_counter() - began
                print(f"  {decisions:,} decisions in {took:.0f} s with the conversions "
                      f"({decisions / took:,.0f}/s overall; BatchDecide during the run p50 "
                      f"{statistics.median(latencies) * 1000:.1f} ms, p99 "
                      f"{percentile(latencies, 0.99) * 1000:.1f} ms)")
                oracle = tallies[0]
                print("  expected reward per decision (the true rate of the picked action):")
                for tally in tallies:
                    print(share_row(tally, oracle))
                set_clock(suite, START + math.ceil(decisions / BATCH) * STEP + WINDOW
                          + timedelta(minutes=5))
                began = time.perf_counter()
                report = await all_outcomes_known(decisioning, decisions)
                known = sum(a.rewards + a.failures for a in report.actions)
                print(f"  every window lapsed: {known:,} of {report.decisions:,} outcomes "
                      f"known after {time.perf_counter() - began:.1f} s; rewards "
                      f"{sum(a.rewards for a in report.actions):,}")
                await evaluate(decisioning, world, logged)
                await speed(decisioning, world, profile_ids, calls,
                            suite.processes["decisioning"].pid, py_spy)
        finally:
            for name in list(suite.processes):
                await suite.stop(name)
            drop_schemas(backend)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=25_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed-only", action="store_true",
                        help="only BatchDecide's speed (no learning simulation, no evaluation)")
    parser.add_argument("--speed-calls", type=int, default=300,
                        help="BatchDecide calls of 100 in each of the speed step's two parts")
    parser.add_argument("--py-spy", default="", metavar="FILE",
                        help="record the decisioning process with py-spy during the speed step")
    args = parser.parse_args()
    if args.database == "postgresql" and not postgres_available():
        print("decisioning [postgresql]: skipped, no PostgreSQL on 127.0.0.1:5432")
        return
    if args.speed_only:
        asyncio.run(speed_only(args.database, args.people, args.seed, args.speed_calls,
                               args.py_spy))
    else:
        asyncio.run(bench(args.database, args.decisions, args.people, args.seed,
                          args.speed_calls, args.py_spy))


if __name__ == "__main__":
    main()
