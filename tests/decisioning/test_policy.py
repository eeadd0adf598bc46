"""Exploration policies: what a decision picks and the pick probability it logs."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from cjo_decisioning.domain.features import BIAS_ONLY, ContextView, Features, featurize
from cjo_decisioning.domain.model import ActionModel, update
from cjo_decisioning.domain.policy import (
    Candidate,
    PolicyConfig,
    Ranked,
    decide,
    standard_normal,
)

CONTEXT = ContextView("email", datetime(2026, 3, 2, 9, tzinfo=UTC), {})
PERSON = featurize({"plan": "gold"}, CONTEXT)
ACTIONS = ["a", "b", "c", "d"]


def _learned(rate: float, n: int = 400) -> ActionModel:
    """A model that saw `n` exposures of PERSON converting at `rate`."""
    hits = round(rate * n)
    return update(ActionModel.prior(0.05), [PERSON] * n, [1] * hits + [0] * (n - hits))


# Close rates, so Thompson sampling keeps trying several of them.
MODELS = {"a": _learned(0.10), "b": _learned(0.08), "c": _learned(0.06), "d": _learned(0.02)}


def _repeat(candidates: list[Candidate], config: PolicyConfig, n: int = 4000,
            seed: int = 5) -> list[list[Ranked]]:
    return decide(MODELS, [PERSON] * n, [candidates] * n, config, np.random.default_rng(seed))


def _shares(ranked: list[list[Ranked]]) -> dict[str, float]:
    counts = Counter(r[0].action for r in ranked)
    return {a: counts[a] / len(ranked) for a in ACTIONS}


def _mean_pick_probabilities(ranked: list[list[Ranked]]) -> dict[str, float]:
    return {a: float(np.mean([next(x.pick_probability for x in r if x.action == a)
                              for r in ranked])) for a in ACTIONS}


@pytest.mark.parametrize("config", [
    PolicyConfig(),
    PolicyConfig(epsilon=0.2),
    PolicyConfig(epsilon=0.1, min_control_share=0.2),
    PolicyConfig(method="epsilon_greedy", epsilon=0.3, min_control_share=0.1),
    PolicyConfig(method="uniform_random", min_control_share=0.25),
])
def test_logged_pick_probabilities_are_how_often_each_action_is_picked(
        config: PolicyConfig) -> None:
    candidates = [Candidate(a, 1.0, control=(a == "d")) for a in ACTIONS]
    ranked = _repeat(candidates, config)
    for r in ranked:
        assert sorted(x.action for x in r) == ACTIONS
        assert sum(x.pick_probability for x in r) == pytest.approx(1.0)
        assert r[0].pick_probability > 0
    shares, logged = _shares(ranked), _mean_pick_probabilities(ranked)
    for a in ACTIONS:
        assert shares[a] == pytest.approx(logged[a], abs=0.025), (a, shares, logged)
    # Off-policy evaluation divides by the first's probability: its mean over picks is the
    # number of actions ever picked, when the probabilities are right.
    inverse = np.mean([1.0 / r[0].pick_probability for r in ranked])
    assert inverse == pytest.approx(sum(1 for a in ACTIONS if shares[a] > 0), rel=0.1)


@pytest.mark.parametrize("epsilon", [0.0, 0.01])
def test_a_rarely_picked_action_logs_the_probability_it_is_picked_with(epsilon: float) -> None:
    """A weak, uncertain action wins about 0.04% of Thompson's draws. Its logged probability,
    averaged over every decision, is how often it is picked, and off-policy evaluation's
    weights 1[a] / p average 1 for each action: every action keeps a probability above 0. When
    only the draws' winners could be picked, the rare action won none of the 256 draws in most
    decisions, was logged with probability 0 there, and 1[b] / p averaged 0.1: its value under
    an always-that-action policy came out ten times too small."""
    strong = ActionModel.prior(0.5)
    strong.precision[0] = 1e6
    weak = ActionModel.prior(0.05)
    weak.mean[0], weak.precision[0] = -2.0, 1.0 / 1.44
    models = {"a": strong, "b": weak}
    n = 200_000
    ranked = decide(models, [BIAS_ONLY] * n, [[Candidate("a", 1.0), Candidate("b", 1.0)]] * n,
                    PolicyConfig(epsilon=epsilon), np.random.default_rng(1))
    logged = {a: np.array([next(x.pick_probability for x in r if x.action == a)
                           for r in ranked]) for a in models}
    picked = {a: np.array([r[0].action == a for r in ranked]) for a in models}
    share = picked["b"].mean()
    for a in models:
        weights = picked[a] / logged[a]
        assert weights.mean() == pytest.approx(1.0, abs=0.1), a
    assert logged["b"].mean() == pytest.approx(share, rel=0.1)
    # 256 draws at 0.04% and one pseudo-draw of which b has half: about 0.24% (+ epsilon / 2).
    assert 0.0015 + epsilon / 2 < share < 0.0035 + epsilon / 2


def test_thompson_explores_close_actions_and_prefers_the_best() -> None:
    shares = _shares(_repeat([Candidate(a, 1.0) for a in ACTIONS], PolicyConfig()))
    assert shares["a"] > shares["b"] > shares["d"]
    assert shares["a"] < 0.9 and shares["b"] > 0.05


def test_prior_only_decisions_spread_across_actions() -> None:
    models = {f"offer_{i}": ActionModel.prior(0.05) for i in range(8)}
    people = [featurize({"n": str(i)}, CONTEXT) for i in range(2000)]
    ranked = decide(models, people, [[Candidate(a, 1.0) for a in models]] * 2000,
                    PolicyConfig(), np.random.default_rng(1))
    counts = Counter(r[0].action for r in ranked)
    assert set(counts) == set(models)
    assert all(150 < c < 350 for c in counts.values()), counts


def test_control_gets_its_share_even_when_the_model_dislikes_it() -> None:
    models = {**MODELS, "d": _learned(0.0, 2000)}
    candidates = [Candidate(a, 1.0, control=(a == "d")) for a in ACTIONS]
    ranked = decide(models, [PERSON] * 4000, [candidates] * 4000,
                    PolicyConfig(min_control_share=0.3), np.random.default_rng(2))
    control = [r for r in ranked if r[0].action == "d"]
    assert len(control) / len(ranked) == pytest.approx(0.3, abs=0.03)
    assert all(r[0].pick_probability == pytest.approx(0.3, abs=0.01) for r in control)
    # Without a control candidate the share is not taken from anyone.
    ranked = decide(models, [PERSON] * 100, [[Candidate("a", 1.0)]] * 100,
                    PolicyConfig(min_control_share=0.3), np.random.default_rng(2))
    assert all(r[0].pick_probability == 1.0 for r in ranked)


def test_a_mandatory_action_wins_with_probability_one() -> None:
    candidates = [Candidate("a", 1.0, control=True), Candidate("b", 1.0),
                  Candidate("d", 1.0, mandatory=True), Candidate("c", 5.0, mandatory=True)]
    ranked = decide(MODELS, [PERSON] * 300, [candidates] * 300,
                    PolicyConfig(epsilon=0.5, min_control_share=0.5), np.random.default_rng(3))
    for r in ranked:
        # Among mandatory actions the better mean score first; the rest after them.
        assert [x.action for x in r[:2]] == ["c", "d"]
        assert [x.pick_probability for x in r] == [1.0, 0.0, 0.0, 0.0]


def test_greedy_picks_the_best_mean_score_and_uniform_picks_evenly() -> None:
    # A lever of 3 on c (6%) beats a (10%).
    candidates = [Candidate("a", 1.0), Candidate("b", 1.0), Candidate("c", 3.0)]
    for r in _repeat(candidates, PolicyConfig(method="greedy"), n=50):
        assert [x.action for x in r] == ["c", "a", "b"]
        assert [x.pick_probability for x in r] == [1.0, 0.0, 0.0]
        assert r[0].score == pytest.approx(3.0 * r[0].propensity)
    ranked = _repeat(candidates, PolicyConfig(method="epsilon_greedy", epsilon=0.3), n=3000)
    for r in ranked:
        chances = {x.action: x.pick_probability for x in r}
        assert chances == pytest.approx({"a": 0.1, "b": 0.1, "c": 0.8})
    assert Counter(r[0].action for r in ranked)["c"] / 3000 == pytest.approx(0.8, abs=0.03)
    ranked = _repeat(candidates, PolicyConfig(method="uniform_random"), n=3000)
    assert all(x.pick_probability == pytest.approx(1 / 3) for r in ranked for x in r)
    assert all(abs(c / 3000 - 1 / 3) < 0.03 for c in Counter(r[0].action
                                                             for r in ranked).values())


def test_ties_go_to_the_smallest_action_key_and_a_seed_repeats_the_decisions() -> None:
    prior = ActionModel.prior(0.05)
    candidates = [Candidate("zeta", 1.0), Candidate("alpha", 1.0), Candidate("mid", 1.0)]
    models = dict.fromkeys(("zeta", "alpha", "mid"), prior)
    r = decide(models, [PERSON], [candidates], PolicyConfig(method="greedy"),
               np.random.default_rng(0))[0]
    assert [x.action for x in r] == ["alpha", "mid", "zeta"]
    people: list[Features] = [featurize({"n": str(i)}, CONTEXT) for i in range(50)]
    first = decide(MODELS, people, [[Candidate(a, 1.0) for a in ACTIONS]] * 50, PolicyConfig(),
                   np.random.default_rng(42))
    shuffled = [[Candidate(a, 1.0) for a in reversed(ACTIONS)]] * 50
    again = decide(MODELS, people, shuffled, PolicyConfig(), np.random.default_rng(42))
    assert first == again


def test_decisions_without_candidates_rank_nothing() -> None:
    ranked = decide(MODELS, [PERSON, PERSON], [[], [Candidate("a", 1.0)]], PolicyConfig(),
                    np.random.default_rng(0))
    assert ranked[0] == [] and [x.action for x in ranked[1]] == ["a"]
    assert decide(MODELS, [PERSON], [[]], PolicyConfig(), np.random.default_rng(0)) == [[]]
    with pytest.raises(KeyError):
        decide(MODELS, [PERSON], [[Candidate("unknown", 1.0)]], PolicyConfig(),
               np.random.default_rng(0))
    with pytest.raises(ValueError):
        PolicyConfig(method="softmax")


def test_thompson_draws_are_standard_normal_and_repeat_under_a_seed() -> None:
    """The draws come from 16-bit integers through a table of normal quantiles: their
    distribution is the normal's to within 2^-16 in probability, and one generator state gives
    one set of draws."""
    draws = standard_normal(np.random.default_rng(11), (400, 8, 256)).ravel()
    assert draws.dtype == np.float32
    assert float(draws.mean()) == pytest.approx(0.0, abs=0.005)
    assert float(draws.std()) == pytest.approx(1.0, abs=0.005)
    # Tail shares as the normal's: P(z > 1) = 15.87%, P(z > 2) = 2.275%, P(z > 3) = 0.135%.
    for z, share in ((1.0, 0.158655), (2.0, 0.02275), (3.0, 0.0013499)):
        assert float((draws > z).mean()) == pytest.approx(share, rel=0.03)
        assert float((draws < -z).mean()) == pytest.approx(share, rel=0.03)
    again = standard_normal(np.random.default_rng(11), (400, 8, 256)).ravel()
    assert np.array_equal(draws, again)
