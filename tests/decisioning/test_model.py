"""The propensity model: hashed features and the Bayesian logistic posterior, learning online
from batches of outcomes as the learning worker feeds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from cjo_decisioning.domain.features import DIMENSIONS, ContextView, Features, featurize
from cjo_decisioning.domain.model import ActionModel, mean_propensities, update
from cjo_decisioning.domain.policy import Candidate, PolicyConfig, decide

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)  # a Monday
EMAIL = ContextView("email", T0, {})


def _person(rng: np.random.Generator, kind: int) -> dict[str, Any]:
    """A profile view whose `kind` decides what the person responds to, with traits, computed
    traits and segments that do not matter (the model has to learn to ignore them)."""
    return {"kind": f"k{kind}", "age": int(rng.integers(18, 80)),
            "country": str(rng.choice(["fr", "de", "us", "uk"])), "vip": bool(rng.random() < 0.2),
            "computed": {"orders_30d": int(rng.integers(0, 20))},
            "segments": [f"s{kind % 4}"] if rng.random() < 0.5 else [],
            "consent": {"email": "subscribed"}, "identifiers": {"email": ["x@example.com"]}}


def _simulate(contextual: bool, *, decisions: int = 25_000,
              batch: int = 500) -> tuple[float, float]:
    """Eight offers, eight kinds of people; each kind has its own best offer (12-14% against
    1-5% for the others), so a non-contextual bandit can reach only ~40% of the oracle. The
    model updates after every batch of decisions (delayed feedback) in hourly contexts.
    Returns the reward earned as a share of the oracle's: overall and over the last 20%."""
    world = np.random.default_rng(7)
    actions = [f"offer_{i}" for i in range(8)]
    rates = world.uniform(0.01, 0.05, size=(8, 8))
    for kind in range(8):
        rates[kind, (3 * kind) % 8] = 0.12 + 0.02 * world.random()
    kinds = world.integers(8, size=3000)
    people = [_person(world, int(k)) for k in kinds]
    rng = np.random.default_rng(1)
    models = {a: ActionModel.prior(0.05) for a in actions}
    candidates = [[Candidate(a, 1.0) for a in actions]] * batch
    earned, best = [], []
    for _ in range(0, decisions, batch):
        who = rng.integers(len(people), size=batch)
        context = ContextView("email", T0 + timedelta(hours=int(rng.integers(200))), {})
        features = [featurize(people[i], context, contextual=contextual) for i in who]
        ranked = decide(models, features, candidates, PolicyConfig(), rng)
        outcomes: dict[str, tuple[list[Features], list[int]]] = {a: ([], []) for a in actions}
        for i, x, ranking in zip(who, features, ranked, strict=True):
            rate = rates[kinds[i], actions.index(ranking[0].action)]
            earned.append(rate)
            best.append(rates[kinds[i]].max())
            outcomes[ranking[0].action][0].append(x)
            outcomes[ranking[0].action][1].append(int(rng.random() < rate))
        models = {a: update(models[a], *outcomes[a]) for a in actions}
    got, oracle = np.array(earned), np.array(best)
    tail = int(0.8 * len(got))
    return got.sum() / oracle.sum(), got[tail:].sum() / oracle[tail:].sum()


def test_contextual_thompson_learns_each_kind_of_persons_best_offer() -> None:
    _, contextual_tail = _simulate(True)
    _, plain_tail = _simulate(False)
    assert contextual_tail >= 0.85, contextual_tail
    # The best offer differs by kind of person: one propensity per offer cannot get there.
    assert plain_tail < 0.5 < contextual_tail - 0.3, (plain_tail, contextual_tail)


def test_update_learns_each_kind_of_persons_rate() -> None:
    rng = np.random.default_rng(3)
    gold, free = (featurize({"plan": p}, EMAIL) for p in ("gold", "free"))
    model = ActionModel.prior(0.05)
    for _ in range(10):
        plans = rng.random(2000) < 0.5
        rewards = np.where(plans, rng.random(2000) < 0.20, rng.random(2000) < 0.02)
        model = update(model, [gold if p else free for p in plans], rewards.astype(int).tolist())
    rate_gold, rate_free = mean_propensities([model], [gold, free])[:, 0]
    assert rate_gold == pytest.approx(0.20, abs=0.02)
    assert rate_free == pytest.approx(0.02, abs=0.01)
    assert (model.observations, model.rewards) == (20_000, int(model.rewards))
    assert 1800 < model.rewards < 2600


def test_a_model_without_outcomes_answers_its_prior() -> None:
    for prior in (0.05, 0.3):
        model = ActionModel.prior(prior)
        people = [featurize({"plan": "gold", "age": 40}, EMAIL), featurize({}, EMAIL),
                  featurize({"plan": "gold"}, EMAIL, contextual=False)]
        assert mean_propensities([model], people)[:, 0] == pytest.approx([prior] * 3, rel=0.35)
    with pytest.raises(ValueError):
        ActionModel.prior(0.0)


def test_update_leaves_the_model_it_was_given_and_narrows_the_posterior() -> None:
    model = ActionModel.prior(0.05)
    mean, precision = model.mean.copy(), model.precision.copy()
    x = featurize({"plan": "gold"}, EMAIL)
    learned = update(model, [x] * 200, [1] * 100 + [0] * 100)
    assert np.array_equal(model.mean, mean) and np.array_equal(model.precision, precision)
    assert (learned.precision[x.indices] > precision[x.indices]).all()
    untouched = np.setdiff1d(np.arange(DIMENSIONS), x.indices)
    assert np.array_equal(learned.precision[untouched], precision[untouched])
    assert mean_propensities([learned], [x])[0, 0] == pytest.approx(0.5, abs=0.05)
    assert update(model, [], []).observations == 0
    with pytest.raises(ValueError):
        update(model, [x], [2])


def test_a_model_survives_bytes() -> None:
    x = featurize({"plan": "gold"}, EMAIL)
    model = update(ActionModel.prior(0.1), [x] * 50, [1] * 10 + [0] * 40)
    mean, precision = model.to_bytes()
    assert len(mean) == len(precision) == DIMENSIONS * 8
    back = ActionModel.from_bytes(mean, precision, model.observations, model.rewards)
    assert np.array_equal(back.mean, model.mean)
    assert np.array_equal(back.precision, model.precision)
    assert (back.observations, back.rewards) == (50, 10)
    with pytest.raises(ValueError):
        ActionModel.from_bytes(mean[:8], precision)


def test_features_read_traits_computed_traits_segments_and_context() -> None:
    profile = {"plan": "gold", "vip": True, "age": 30, "tags": ["a", "b"],
               "computed": {"orders": 3}, "segments": ["vip"],
               "consent": {"email": "subscribed"}, "identifiers": {"email": ["a@b.c"]},
               "address": {"city": "Paris"}}
    x = featurize(profile, EMAIL)
    assert x.indices[0] == 0 and x.values[0] == 1.0
    assert np.array_equal(x.indices, np.unique(x.indices))
    # plan, vip, age, 2 tags, orders, segment + channel, hour, weekday, hour x channel;
    # consent, identifiers and other nested objects are not features.
    assert x.indices.size == 1 + 7 + 4
    assert np.linalg.norm(x.values[1:]) == pytest.approx(1.0)
    only = featurize(profile, EMAIL, names=["plan", "computed.orders"])
    assert only.indices.size == 1 + 2 + 1 + 4  # the two traits, the segment, the context
    assert set(only.indices) < set(x.indices)
    assert featurize(profile, EMAIL, contextual=False).indices.tolist() == [0]
    # The same person at another hour, on another channel, or with other attributes differs.
    later = featurize(profile, ContextView("email", T0 + timedelta(hours=1), {}))
    sms = featurize(profile, ContextView("sms", T0, {}))
    page = featurize(profile, ContextView("email", T0, {"page": "cart"}))
    for other in (later, sms, page):
        assert set(other.indices) != set(x.indices)


def test_numbers_are_bucketed_by_magnitude() -> None:
    def index_of(age: float) -> set[int]:
        return set(featurize({"age": age}, EMAIL, contextual=True).indices.tolist())

    assert index_of(30) == index_of(31)
    assert index_of(30) != index_of(3000)
    assert index_of(30) != index_of(-30)
    assert featurize({"age": float("nan")}, EMAIL).indices.size == 1 + 4


def test_features_hash_the_same_in_every_process() -> None:
    x = featurize({"plan": "gold", "segments": ["vip"]}, EMAIL)
    program = (
        "import json; from datetime import datetime, UTC;"
        "from cjo_decisioning.domain.features import ContextView, featurize;"
        "x = featurize({'plan': 'gold', 'segments': ['vip']},"
        " ContextView('email', datetime(2026, 3, 2, 9, tzinfo=UTC), {}));"
        "print(json.dumps(x.to_json()))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", program], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert json.loads(out) == x.to_json()
    back = Features.from_json(json.loads(out))
    assert np.array_equal(back.indices, x.indices) and np.array_equal(back.values, x.values)
    with pytest.raises(ValueError):
        Features.from_json({"i": [0, DIMENSIONS], "v": [1.0, 1.0]})


def test_context_as_cel_sees_it() -> None:
    context = ContextView("sms", datetime(2026, 3, 8, 23, 30, tzinfo=UTC), {"page": "home"})
    assert context.cel() == {"channel": "sms", "hour": 23, "weekday": 6,
                             "attributes": {"page": "home"}}
