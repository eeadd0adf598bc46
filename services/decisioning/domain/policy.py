"""Exploration: which eligible candidate a decision picks given the model's uncertainty, and the
probability with which it picks it (logged for off-policy evaluation).

Thompson sampling draws each candidate's logit from its posterior (a diagonal Gaussian over the
weights makes the logit exactly normal, so no weights are sampled), turns it into a propensity
and a score; the draws estimate, for every candidate, the probability that it ranks first; that
probability is then mixed, exactly, with the uniform exploration share (epsilon) and the control
share:

    P(a) = c [a is control] + (1 - c) (epsilon / k + (1 - epsilon) P_thompson(a))

and the decision itself is sampled from that very vector, so the logged probability is exactly
the one the pick was made with. P_thompson is the share of the draws a candidate wins plus one
pseudo-draw spread evenly over the candidates: (wins + 1/k) / (draws + 1). Without that
pseudo-draw an action that truly wins 0.04% of the time wins none of 256 draws in most
decisions, is logged (and picked) with probability 0 there, and off-policy evaluation has no
support for it: an always-that-action policy came out ten times too small. With it, every
eligible candidate keeps a probability of at least 1 / (k (draws + 1)), which costs
1 / (draws + 1) of the decisions (0.4% at 256 draws) spread evenly. The others are ranked by
the first draw's scores. The uniform share is epsilon / k of what the control share leaves:
(1 - c) epsilon / k for each candidate. Everything is vectorised over the batch: the draws of
a 100-decision batch with 8 candidates are one array.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np

from cjo_decisioning.domain.features import Features
from cjo_decisioning.domain.model import ActionModel, logit_moments, probit_propensity

THOMPSON = "thompson"
EPSILON_GREEDY = "epsilon_greedy"
GREEDY = "greedy"
UNIFORM_RANDOM = "uniform_random"
METHODS = (THOMPSON, EPSILON_GREEDY, GREEDY, UNIFORM_RANDOM)

# Thompson's draws are 16-bit uniforms through a table of the standard normal's quantiles at
# the midpoints (i + 0.5) / 2^16: a quarter of the CPU of numpy's float32 standard_normal (0.4
# against 1.8 ms for a 100 x 8 x 256 batch), which was a fifth of a BatchDecide's CPU and
# invisible to py-spy (numpy draws without the GIL). The draws are normal to within 2^-16 in
# probability (|z| <= 4.33): ranking draws needs no more. Two equal candidates draw the same
# value with probability 2^-16, and a tie goes to the smaller key, as with any equal scores.
_DRAW_BITS = 16


@cache
def _normal_quantiles() -> np.ndarray:
    levels = 1 << _DRAW_BITS
    normal = statistics.NormalDist()
    upper = np.array([normal.inv_cdf((levels // 2 + i + 0.5) / levels)
                      for i in range(levels // 2)])
    return np.concatenate([-upper[::-1], upper]).astype(np.float32)


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 standard normal draws of ``shape`` (a new array), from ``rng``'s 16-bit
    integers through the quantile table: the same generator state gives the same draws."""
    bits = rng.integers(0, 1 << _DRAW_BITS, size=shape, dtype=np.uint16)
    draws: np.ndarray = np.take(_normal_quantiles(), bits)
    return draws


# Decisions whose draws are held in memory at once: 128 x 8 candidates x 256 draws of float64
# is 2 MB per array, whatever the batch size.
_CHUNK = 128


class Candidate(NamedTuple):
    """One eligible action of one decision; its score is intercept + slope * propensity.
    (NamedTuples here: a batch makes one per candidate and decision.)"""

    action: str
    slope: float
    intercept: float = 0.0
    mandatory: bool = False
    control: bool = False


@dataclass(frozen=True)
class PolicyConfig:
    method: str = THOMPSON
    epsilon: float = 0.0
    min_control_share: float = 0.0
    draws: int = 256

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError("epsilon must lie in [0, 1]")
        if not 0.0 <= self.min_control_share <= 1.0:
            raise ValueError("min_control_share must lie in [0, 1]")
        if self.draws < 1:
            raise ValueError("draws must be at least 1")


class Ranked(NamedTuple):
    action: str
    propensity: float
    """The posterior mean propensity."""
    score: float
    """The score the ranking used (Thompson: with the propensity drawn for this decision)."""
    pick_probability: float
    """P(this action ranks first) under the policy; the first's is the logged one."""


def decide(models: Mapping[str, ActionModel], features: Sequence[Features],
           candidates: Sequence[Sequence[Candidate]], config: PolicyConfig,
           rng: np.random.Generator) -> list[list[Ranked]]:
    """Each decision's candidates ranked best first (all of them), [] for a decision with none.
    An eligible mandatory candidate is first with probability 1 (the best mean score among
    several). Every action named by a candidate must be in ``models`` (the caller passes
    ``ActionModel.prior`` for one never learned). The same rng state gives the same result."""
    n = len(features)
    if len(candidates) != n:
        raise ValueError("one candidate list per feature vector")
    # Candidates in action-key order: argmax takes the first of equal scores, so ties go to
    # the smallest key, whatever order the caller listed them in.
    ordered = [sorted(c, key=lambda candidate: candidate.action) for c in candidates]
    width = max((len(c) for c in ordered), default=0)
    if width == 0:
        return [[] for _ in range(n)]
    keys = sorted({c.action for cs in ordered for c in cs})
    missing = [a for a in keys if a not in models]
    if missing:
        raise KeyError(f"no model for action(s) {', '.join(missing)}")
    column = {a: j for j, a in enumerate(keys)}

    # Filled from flat lists with one fancy-indexed assignment per array (a per-cell numpy
    # assignment cost a tenth of the policy's time).
    valid = np.zeros((n, width), dtype=bool)
    columns = np.zeros((n, width), dtype=np.int64)
    slope = np.zeros((n, width))
    intercept = np.zeros((n, width))
    mandatory = np.zeros((n, width), dtype=bool)
    control = np.zeros((n, width), dtype=bool)
    counts = [len(cs) for cs in ordered]
    flat = [c for cs in ordered for c in cs]
    cell = (np.repeat(np.arange(n), counts),
            np.concatenate([np.arange(m) for m in counts]).astype(np.int64))
    valid[cell] = True
    columns[cell] = [column[c.action] for c in flat]
    slope[cell] = [c.slope for c in flat]
    intercept[cell] = [c.intercept for c in flat]
    mandatory[cell] = [c.mandatory for c in flat]
    control[cell] = [c.control for c in flat]
    k = valid.sum(axis=1)

    mu_all, var_all = logit_moments([models[a] for a in keys], features)
    rows = np.arange(n)[:, None]
    mu, var = mu_all[rows, columns], var_all[rows, columns]
    propensity = probit_propensity(mu, var)
    mean_score = np.where(valid, intercept + slope * propensity, -np.inf)

    if config.method == THOMPSON:
        base, drawn_score = _thompson(mu, var, slope, intercept, valid, config.draws, rng)
        rank_score = drawn_score
    else:
        rank_score = mean_score
        if config.method == UNIFORM_RANDOM:
            base = valid / k[:, None].clip(min=1)
        else:
            base = np.zeros((n, width))
            base[np.arange(n), np.argmax(mean_score, axis=1)] = 1.0
    epsilon = config.epsilon if config.method in (THOMPSON, EPSILON_GREEDY) else 0.0
    uniform = valid / k[:, None].clip(min=1)
    probability = epsilon * uniform + (1.0 - epsilon) * base
    controls = (valid & control).sum(axis=1)
    share = np.where(controls > 0, config.min_control_share, 0.0)
    probability = (share[:, None] * (valid & control) / controls[:, None].clip(min=1)
                   + (1.0 - share[:, None]) * probability)

    # The pick is drawn from exactly the probability vector that is logged (one uniform per
    # row against its cumulative sums), and that vector is above 0 for every eligible
    # candidate, so 1[a] / p(a) has mean 1 for every action and IPS is unbiased. Invalid
    # columns add nothing to the sums, so cumsum > u never lands on one.
    cumulative = np.cumsum(probability, axis=1)
    threshold = rng.random(n) * cumulative[:, -1]
    chosen = np.argmax(cumulative > threshold[:, None], axis=1)

    # The others best first, for the whole batch at once: columns are in action-key order and
    # the sort is stable, so equal scores keep the smaller key first; invalid cells (-inf)
    # sort last. Python lists from here on: a numpy scalar per element costs more.
    others = np.argsort(-rank_score, axis=1, kind="stable").tolist()
    propensities, scored = propensity.tolist(), rank_score.tolist()
    probabilities, picks = probability.tolist(), chosen.tolist()
    has_mandatory: list[bool] = np.asarray(mandatory.any(axis=1)).tolist()
    results: list[list[Ranked]] = []
    for i, cs in enumerate(ordered):
        if not cs:
            results.append([])
            continue
        if not has_mandatory[i]:
            pick = picks[i]
            p_i, s_i, q_i = propensities[i], scored[i], probabilities[i]
            count = len(cs)
            results.append([Ranked(cs[j].action, p_i[j], s_i[j], q_i[j])
                            for j in [pick, *(j for j in others[i][:count] if j != pick)]])
            continue
        scores = rank_score[i]
        if mandatory[i].any():
            first = [j for j in range(len(cs)) if mandatory[i, j]]
            first.sort(key=lambda j: (-mean_score[i, j], cs[j].action))
            rest = sorted((j for j in range(len(cs)) if not mandatory[i, j]),
                          key=lambda j: (-scores[j], cs[j].action))
            order = first + rest
            chances = dict.fromkeys(order, 0.0)
            chances[first[0]] = 1.0
        else:
            pick = int(chosen[i])
            order = [pick, *sorted((j for j in range(len(cs)) if j != pick),
                                   key=lambda j: (-scores[j], cs[j].action))]
            chances = {j: float(probability[i, j]) for j in order}
        results.append([Ranked(cs[j].action, float(propensity[i, j]), float(scores[j]),
                               chances[j]) for j in order])
    return results


def _thompson(mu: np.ndarray, var: np.ndarray, slope: np.ndarray, intercept: np.ndarray,
              valid: np.ndarray, draws: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """P(first) of each candidate over `draws` posterior draws (and one even pseudo-draw),
    and the first draw's scores."""
    n, width = mu.shape
    chance = np.zeros((n, width))
    first = np.full((n, width), -np.inf)
    sd = np.sqrt(var)
    # An invalid cell scores -inf: slope 0 and intercept -inf (the propensity is finite), one
    # pass fewer than a boolean-masked assignment over the draws.
    slope = np.where(valid, slope, 0.0)
    intercept = np.where(valid, intercept, -np.inf)
    # Where every candidate of a decision has the same score of its propensity (one positive
    # slope, one intercept: no value, lever or context weight sets them apart, as at most
    # points), the score is increasing in the logit, so the drawn logits rank the draws
    # themselves and the sigmoid (seven passes over the draws, half of the policy's CPU) is
    # left out; an invalid cell's logit is -inf.
    big = np.finfo(np.float64).max
    low = np.where(valid, slope, big).min(axis=1)
    alike = ((low > 0) & (low == np.where(valid, slope, -big).max(axis=1))
             & (np.where(valid, intercept, big).min(axis=1)
                == np.where(valid, intercept, -big).max(axis=1)))
    logit_mu = np.where(valid, mu, -np.inf)
    logit_sd = np.where(valid, sd, 0.0)
    for start in range(0, n, _CHUNK):
        block = slice(start, min(start + _CHUNK, n))
        m = block.stop - block.start
        # float32 draws: ranking needs no more, and exp runs twice as fast on them.
        z = standard_normal(rng, (m, width, draws))
        if alike[block].all():
            z *= logit_sd[block, :, None]
            z += logit_mu[block, :, None]
            winners = _argmax_columns(z)
            counts = np.bincount((np.arange(m)[:, None] * width + winners).ravel(),
                                 minlength=m * width).reshape(m, width)
            spread = valid[block] / valid[block].sum(axis=1, keepdims=True).clip(min=1)
            chance[block] = (counts + spread) / (draws + 1)
            first[block] = _scores(z[:, :, 0].copy(), slope[block], intercept[block])
            continue
        z *= sd[block, :, None]
        z += mu[block, :, None]
        _scores(z, slope[block, :, None], intercept[block, :, None])
        winners = _argmax_columns(z)
        counts = np.bincount((np.arange(m)[:, None] * width + winners).ravel(),
                             minlength=m * width).reshape(m, width)
        # One more pseudo-draw, spread evenly over the candidates: see the module docstring.
        spread = valid[block] / valid[block].sum(axis=1, keepdims=True).clip(min=1)
        chance[block] = (counts + spread) / (draws + 1)
        first[block] = z[:, :, 0]
    return chance, first


def _scores(z: np.ndarray, slope: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """The scores ``intercept + slope * sigmoid(z)`` of drawn logits, computed in ``z``."""
    np.clip(z, -40.0, 40.0, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += 1.0
    np.reciprocal(z, out=z)
    z *= slope
    z += intercept
    return z


def _argmax_columns(z: np.ndarray) -> np.ndarray:
    """``np.argmax(z, axis=1)`` of an (m, width, draws) array, as a running maximum over the
    few columns: each step reads one contiguous (m, draws) slice, where argmax across the
    middle axis strides through memory (two thirds of the policy's time at 8 candidates).
    Strictly greater replaces, so ties go to the first column, as with argmax."""
    best = z[:, 0, :].copy()
    winners = np.zeros(best.shape, dtype=np.int64)
    for j in range(1, z.shape[1]):
        column = z[:, j, :]
        better = column > best
        winners[better] = j
        np.maximum(best, column, out=best)
    return winners

