"""EvaluatePolicy over a real gRPC server, on a seeded simulated decision log whose true
reward rates are known: every estimator's interval must hold the truth of each policy on the
logged contexts."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import pytest
from decision_log_support import LogServer, candidate, log_server, logged, point
from grpc_status import rpc_status

from cjo.decisioning.v1 import decision_point_pb2 as dp
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo.decisioning.v1 import evaluation_pb2 as ev
from cjo_decisioning.adapters import decision_log
from cjo_decisioning.adapters.tables import EXPOSED, NO_ACTION, NOT_REWARDED, PENDING, REWARDED
from cjo_decisioning.domain.catalogue import Action, Exploration
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.status import error_reason, field_violations
from support import Backend, as_service

WS = as_service("ws-a")
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
ACTIONS = ("a", "b", "c")
# True conversion rates by kind of person: a suits kind 0, c kind 1.
RATES = np.array([[0.10, 0.04, 0.02],
                  [0.02, 0.05, 0.12]])
DECISIONS = 6000


@dataclass
class Simulated:
    """The log's contexts as the simulation knows them: each decision's true rates, eligible
    actions and logged propensities (in ACTIONS order; NaN where ineligible)."""

    rates: np.ndarray  # (n, 3)
    eligible: np.ndarray  # (n, 3) bool
    propensities: np.ndarray  # (n, 3)

    def truth(self, probabilities: np.ndarray) -> float:
        """The true value of a policy picking with ``probabilities`` (n, 3), over the decisions
        it covers (rows summing to 1)."""
        covered = probabilities.sum(axis=1) > 0
        return float((probabilities * np.nan_to_num(self.rates))[covered].sum(axis=1).mean())

    def best(self, scores: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
        scores = np.where(self.eligible, scores, -np.inf)
        picks = np.zeros_like(scores)
        picks[np.arange(len(scores)), scores.argmax(axis=1)] = 1.0
        return (1 - epsilon) * picks + epsilon * self.eligible / self.eligible.sum(axis=1,
                                                                                  keepdims=True)


def simulate(seed: int = 7) -> tuple[list[dict[str, Any]], Simulated]:
    """A logging policy that favours the action its (misspecified) model rates best: 0.6 to
    the best of three candidates and 0.2 to the others (0.7 / 0.3 of two); c is eligible for
    three people in four."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 2, DECISIONS)
    rates = RATES[kinds]
    eligible = np.ones((DECISIONS, 3), dtype=bool)
    eligible[:, 2] = rng.random(DECISIONS) < 0.75
    propensities = np.clip(rates * np.exp(rng.normal(0, 0.4, rates.shape)), 0.001, 0.999)
    rows = []
    for i in range(DECISIONS):
        keys = [k for k, ok in zip(ACTIONS, eligible[i], strict=True) if ok]
        estimated = {k: float(propensities[i, ACTIONS.index(k)]) for k in keys}
        best = max(keys, key=estimated.__getitem__)
        share = 0.2 if len(keys) == 3 else 0.3
        picks = {k: 1.0 - share * (len(keys) - 1) if k == best else share for k in keys}
        chosen = str(rng.choice(keys, p=[picks[k] for k in keys]))
        rewarded = rng.random() < rates[i, ACTIONS.index(chosen)]
        rows.append(logged("ws-a", "offers", T0 + timedelta(seconds=i),
                           REWARDED if rewarded else NOT_REWARDED,
                           [candidate(k, estimated[k], picks[k]) for k in keys], chosen=chosen))
    return rows, Simulated(np.where(eligible, rates, np.nan), eligible,
                           np.where(eligible, propensities, np.nan))


@pytest.fixture(scope="module")
def simulated() -> tuple[list[dict[str, Any]], Simulated]:
    return simulate()


@pytest.fixture
async def server(backend: Backend, simulated: tuple[list[dict[str, Any]], Simulated],
                 ) -> AsyncIterator[LogServer]:
    async with log_server(backend) as started:
        # b's value is 2 now (it was 1 when the decisions were made): a greedy replay of the
        # point as configured now weighs it so.
        started.catalogue("ws-a", point("offers", ACTIONS),
                          [Action(key="a"), Action(key="b", value=2.0), Action(key="c")], T0)
        started.log(simulated[0])
        yield started


def request(policy: ev.TargetPolicy, **fields: Any) -> pb.EvaluatePolicyRequest:
    return pb.EvaluatePolicyRequest(decision_point="decisionPoints/offers", policy=policy,
                                    **fields)


def assert_holds(reply: pb.EvaluatePolicyResponse, truth: float) -> None:
    for name in ("ips", "snips", "doubly_robust"):
        estimate = getattr(reply, name)
        assert estimate.lower <= truth <= estimate.upper, (name, truth, estimate)
        assert estimate.lower < estimate.value < estimate.upper
        assert estimate.standard_error > 0


async def test_every_estimator_holds_the_truth_of_each_policy(
        server: LogServer, simulated: tuple[list[dict[str, Any]], Simulated]) -> None:
    rows, sim = simulated
    propensities = np.nan_to_num(sim.propensities)
    values = np.array([1.0, 2.0, 1.0])
    cases = [
        (ev.TargetPolicy(uniform_random=ev.UniformRandomPolicy()),
         sim.eligible / sim.eligible.sum(axis=1, keepdims=True)),
        (ev.TargetPolicy(always_action="a"), sim.eligible * [1.0, 0.0, 0.0]),
        (ev.TargetPolicy(greedy=ev.GreedyPolicy()), sim.best(propensities * values)),
        (ev.TargetPolicy(alternative=ev.AlternativePolicy(levers={"c": 3.0}, values={"b": 1.0})),
         sim.best(propensities * [1.0, 1.0, 3.0])),
        (ev.TargetPolicy(alternative=ev.AlternativePolicy(
            arbitration=dp.Arbitration(
                formula="propensity * lever + (action.key == 'c' ? 0.05 : 0.0)"),
            exploration=dp.Exploration(method=dp.EXPLORATION_METHOD_EPSILON_GREEDY,
                                       epsilon=0.2))),
         sim.best(propensities + np.array([0.0, 0.0, 0.05]), epsilon=0.2)),
    ]
    for policy, probabilities in cases:
        reply = await server.stub.EvaluatePolicy(request(policy), metadata=WS)
        assert (reply.decisions, reply.uncovered) == (DECISIONS, 0), policy
        assert_holds(reply, sim.truth(probabilities))
        observed = sum(r["outcome"] == REWARDED for r in rows) / DECISIONS
        assert reply.logged.value == pytest.approx(observed)
        assert 0 < reply.effective_sample_size <= DECISIONS


async def test_always_an_action_leaves_out_decisions_where_it_was_not_eligible(
        server: LogServer, simulated: tuple[list[dict[str, Any]], Simulated]) -> None:
    _, sim = simulated
    reply = await server.stub.EvaluatePolicy(request(ev.TargetPolicy(always_action="c")),
                                             metadata=WS)
    without_c = int((~sim.eligible[:, 2]).sum())
    assert (reply.decisions, reply.uncovered) == (DECISIONS - without_c, without_c)
    assert_holds(reply, sim.truth(sim.eligible * [0.0, 0.0, 1.0]))


async def test_only_decisions_with_an_outcome_in_the_period_count(server: LogServer) -> None:
    later = T0 + timedelta(days=1)
    server.log([logged("ws-a", "offers", later, outcome, [candidate("a", 0.1, 1.0)])
                for outcome in (PENDING, EXPOSED, NOT_REWARDED, REWARDED)]
               + [logged("ws-a", "offers", later, NO_ACTION, [])])
    reply = await server.stub.EvaluatePolicy(request(
        ev.TargetPolicy(always_action="a"), start_time=to_timestamp(later)), metadata=WS)
    assert (reply.decisions, reply.uncovered) == (2, 0)
    assert reply.ips.value == pytest.approx(0.5)
    everything = await server.stub.EvaluatePolicy(request(
        ev.TargetPolicy(always_action="a")), metadata=WS)
    assert everything.decisions == DECISIONS + 2
    before = await server.stub.EvaluatePolicy(request(
        ev.TargetPolicy(always_action="a"), end_time=to_timestamp(T0 + timedelta(seconds=100))),
        metadata=WS)
    assert before.decisions == 100


async def test_a_wider_confidence_level_widens_the_interval(server: LogServer) -> None:
    policy = ev.TargetPolicy(uniform_random=ev.UniformRandomPolicy())
    default = await server.stub.EvaluatePolicy(request(policy), metadata=WS)
    wide = await server.stub.EvaluatePolicy(request(policy, confidence_level=0.99), metadata=WS)
    assert wide.ips.value == default.ips.value
    assert wide.ips.upper - wide.ips.lower > default.ips.upper - default.ips.lower


async def rpc_error(server: LogServer, call: pb.EvaluatePolicyRequest) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await server.stub.EvaluatePolicy(call, metadata=WS)
    return error.value


async def test_an_unknown_point_is_not_found(server: LogServer) -> None:
    error = await rpc_error(server, pb.EvaluatePolicyRequest(
        decision_point="decisionPoints/nowhere",
        policy=ev.TargetPolicy(uniform_random=ev.UniformRandomPolicy())))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(rpc_status.from_call(error)) == "DECISION_POINT_NOT_FOUND"


def alternative(**fields: Any) -> ev.TargetPolicy:
    return ev.TargetPolicy(alternative=ev.AlternativePolicy(**fields))


@pytest.mark.parametrize(("call", "field", "says"), [
    (request(ev.TargetPolicy(always_action="z")), "policy.always_action", "not an action"),
    (request(ev.TargetPolicy(always_action="")), "policy.always_action", "empty"),
    (request(ev.TargetPolicy()), "policy", "required"),
    (request(ev.TargetPolicy(greedy=ev.GreedyPolicy()), confidence_level=1.0),
     "confidence_level", "(0, 1)"),
    (request(ev.TargetPolicy(greedy=ev.GreedyPolicy()), confidence_level=-0.5),
     "confidence_level", "(0, 1)"),
    (request(ev.TargetPolicy(greedy=ev.GreedyPolicy()), start_time=to_timestamp(T0),
             end_time=to_timestamp(T0)), "end_time", "after"),
    (request(alternative(arbitration=dp.Arbitration(formula="propensity *"))),
     "policy.alternative.arbitration.formula", "line 1, column"),
    (request(alternative(arbitration=dp.Arbitration(formula="propensity * profile.score"))),
     "policy.alternative.arbitration.formula", "unknown variable profile"),
    (request(alternative(arbitration=dp.Arbitration(context_weight="1.0"))),
     "policy.alternative.arbitration.context_weight", "not logged"),
    (request(alternative(levers={"a": -1.0})), "policy.alternative.levers[a]", ">= 0"),
    (request(alternative(exploration=dp.Exploration(method=dp.EXPLORATION_METHOD_THOMPSON))),
     "policy.alternative.exploration.method", "Thompson"),
    (request(alternative(exploration=dp.Exploration(epsilon=1.5))),
     "policy.alternative.exploration.epsilon", "0 to 1"),
    (pb.EvaluatePolicyRequest(decision_point="offers",
                              policy=ev.TargetPolicy(greedy=ev.GreedyPolicy())),
     "decision_point", "decisionPoints/"),
])
async def test_bad_requests_name_the_field(server: LogServer, call: pb.EvaluatePolicyRequest,
                                           field: str, says: str) -> None:
    error = await rpc_error(server, call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(rpc_status.from_call(error))
    assert field in violations, violations
    assert says in violations[field]


async def test_a_point_formula_over_the_profile_cannot_be_replayed(
        backend: Backend) -> None:
    async with log_server(backend) as server:
        server.catalogue("ws-a", point("offers", ["a"], formula="propensity * profile.score"),
                         [Action(key="a")], T0)
        error = await rpc_error(server, request(ev.TargetPolicy(greedy=ev.GreedyPolicy())))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "profile" in field_violations(rpc_status.from_call(error))["policy.greedy"]


async def test_the_reply_says_why_decisions_are_left_out_and_whether_to_trust_it(
        server: LogServer) -> None:
    """Each left-out decision counted under its reason, and a target the log barely
    supports (b picked with 0.1% in every decision) flagged, with the largest weight it
    takes."""
    later = T0 + timedelta(days=2)
    a, b = candidate("a", 0.1, 0.999), candidate("b", 0.05, 0.001)
    rows = [logged("ws-a", "offers", later, NOT_REWARDED, [a, b]) for _ in range(40)]
    rows += [logged("ws-a", "offers", later, REWARDED, [{**a, "mandatory": True,
                                                         "pick_probability": 1.0}, b]),
             logged("ws-a", "offers", later, NOT_REWARDED, [{**a, "replaced": True}, b]),
             logged("ws-a", "offers", later, REWARDED, [{**a, "propensity": "many"}, b]),
             logged("ws-a", "offers", later, NOT_REWARDED, [a])]
    unpicked = logged("ws-a", "offers", later, NOT_REWARDED, [a, b])
    rows.append({**unpicked, "pick_probability": 0.0})
    server.log(rows)
    reply = await server.stub.EvaluatePolicy(request(
        ev.TargetPolicy(always_action="b"), start_time=to_timestamp(later)), metadata=WS)
    assert reply.decisions == 40
    assert dict(reply.uncovered_reasons) == {"MANDATORY": 1, "REPLACED": 1, "UNUSABLE_LOG": 2,
                                             "NO_TARGET_ACTION": 1}
    assert reply.uncovered == 5
    assert reply.max_weight == pytest.approx(1000)
    assert reply.expected_effective_sample_size == pytest.approx(40 / 1000)
    assert not reply.reliable
    assert list(reply.warnings) == ["LOW_EFFECTIVE_SAMPLE_SIZE"]
    # No pick of b among the 40: nothing is known of its rate, and the intervals say so.
    assert (reply.snips.lower, reply.snips.upper) == (0.0, 1.0)
    assert reply.ips.upper > 0.3 and reply.doubly_robust.upper > 0.3


async def test_a_point_exploring_without_a_floor_is_flagged(
        server: LogServer, simulated: tuple[list[dict[str, Any]], Simulated]) -> None:
    """The fixture's point has the default floor: its uniform policy's estimate is
    trusted. With the floor switched off (epsilon 0) the reply says the weights are unbounded,
    whatever this log happens to hold."""
    policy = ev.TargetPolicy(uniform_random=ev.UniformRandomPolicy())
    floored = await server.stub.EvaluatePolicy(request(policy), metadata=WS)
    assert floored.reliable and not floored.warnings
    server.catalogue("ws-a", dataclasses.replace(
        point("bare", ACTIONS), exploration=Exploration("thompson", 0.0)), [], T0)
    server.log([{**row, "decision_point": "bare", "decision_id": f"bare-{i}"}
                for i, row in enumerate(simulated[0][:200])])
    bare = await server.stub.EvaluatePolicy(pb.EvaluatePolicyRequest(
        decision_point="decisionPoints/bare", policy=policy), metadata=WS)
    assert bare.decisions == 200
    assert not bare.reliable and list(bare.warnings) == ["NO_EXPLORATION_FLOOR"]


async def test_a_log_read_in_chunks_gives_the_same_answer_and_leaves_the_collector_on(
        server: LogServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log is read and decoded a chunk at a time (a long period is never all in memory at
    once), with the same estimates as one read; the garbage collector, paused only around each
    chunk's decode, is on again after an evaluation, and after one that fails."""
    assert gc.isenabled()
    policy = ev.TargetPolicy(greedy=ev.GreedyPolicy())
    whole = await server.stub.EvaluatePolicy(request(policy), metadata=WS)
    assert gc.isenabled()
    monkeypatch.setattr(decision_log, "READ_CHUNK", 700)  # 6000 rows: 9 chunks, one partial
    chunked = await server.stub.EvaluatePolicy(request(policy), metadata=WS)
    assert chunked == whole
    assert gc.isenabled()
    error = await rpc_error(server, request(ev.TargetPolicy(always_action="z")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert gc.isenabled()


def test_overlapping_collector_pauses_leave_it_on_only_when_the_last_ends() -> None:
    """Evaluations decode on worker threads at once; their pauses overlap in any order."""
    assert gc.isenabled()
    first, second = decision_log._collector_paused(), decision_log._collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second decode is still running
    second.__exit__(None, None, None)
    assert gc.isenabled()
    with pytest.raises(ValueError), decision_log._collector_paused():
        raise ValueError("a decode failed")
    assert gc.isenabled()


def test_a_log_read_in_chunks_holds_less_at_once(server: LogServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Read whole (as before: every row and the whole period's text at once) against in chunks:
    the chunked read's peak is lower, as only the estimators' inputs grow with the period."""

    def peak() -> int:
        tracemalloc.start()
        try:
            with server.db.transaction() as session:
                logged = decision_log.decided_with_outcome(
                    session, "ws-a", "offers", None, T0 + timedelta(days=1),
                    datetime.now(UTC))
            assert len(logged.action) == DECISIONS
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    monkeypatch.setattr(decision_log, "READ_CHUNK", 10 * DECISIONS)
    whole = peak()
    monkeypatch.setattr(decision_log, "READ_CHUNK", 500)
    chunked = peak()
    assert chunked < 0.9 * whole, (chunked, whole)
