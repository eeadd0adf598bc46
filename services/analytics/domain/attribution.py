"""Multi-touch attribution: which touchpoints (messages delivered or engaged) earned each
conversion. Pure functions; credit is split in millionths by largest remainder so that, for
every model, the credits of a conversion add up exactly to one conversion and to its revenue.

Touchpoints of a conversion are the profile's messages with a delivered, opened or clicked fact
in [conversion time - lookback, conversion time]; a message counts once, at its first such fact
in that range. Touchpoints are ordered by time, ties by message id, so first and last touch are
deterministic. A conversion with no touchpoint is listed and counted as unattributed; it credits
nobody.

The data-driven model learns one removal effect per channel from Markov paths (see
``markov_paths``): a path depends only on the touch facts in [window start - lookback, window
end) and the conversions in that same span, so identical behaviour there gets identical credit
whatever happened before or after it."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

MICROS = 1_000_000
"""Credit unit: one millionth of a conversion or of a currency unit."""


class Model(StrEnum):
    FIRST_TOUCH = "first_touch"
    LAST_TOUCH = "last_touch"
    LINEAR = "linear"
    TIME_DECAY = "time_decay"
    POSITION_BASED = "position_based"
    DATA_DRIVEN = "data_driven"


@dataclass(frozen=True)
class TouchFact:
    """A delivered/opened/clicked fact of one message of a profile."""

    message_id: str
    channel: int
    journey_id: str
    content_key: str
    occur_time: datetime


@dataclass(frozen=True)
class Conversion:
    fact_id: str
    profile_id: str
    occur_time: datetime
    revenue: float


@dataclass(frozen=True)
class Touchpoint:
    message_id: str
    channel: int
    journey_id: str
    content_key: str
    occur_time: datetime


@dataclass(frozen=True)
class CreditedTouch:
    touch: Touchpoint
    share_micros: int
    revenue_micros: int


@dataclass
class Credit:
    conversions_micros: int = 0
    revenue_micros: int = 0


@dataclass
class ModelResult:
    model: Model
    channels: dict[int, Credit] = field(default_factory=lambda: defaultdict(Credit))
    journeys: dict[str, Credit] = field(default_factory=lambda: defaultdict(Credit))
    content_items: dict[str, Credit] = field(default_factory=lambda: defaultdict(Credit))
    conversions: list[tuple[Conversion, list[CreditedTouch]]] = field(default_factory=list)


def to_micros(amount: float) -> int:
    return round(amount * MICROS)


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights`` (equal when they sum to 0) by
    largest remainder; equal remainders go to the earlier item. The parts sum to ``total``."""
    if not weights:
        return []
    weight_sum = math.fsum(weights)
    if weight_sum <= 0:
        weights, weight_sum = [1.0] * len(weights), float(len(weights))
    exact = [total * w / weight_sum for w in weights]
    parts = [math.floor(x) for x in exact]
    left = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


def _first_per_message(facts: Iterable[TouchFact]) -> list[Touchpoint]:
    """One touchpoint per message, at its first fact, ordered by time then message id."""
    first: dict[str, TouchFact] = {}
    for fact in facts:
        first.setdefault(fact.message_id, fact)
    points = [Touchpoint(f.message_id, f.channel, f.journey_id, f.content_key, f.occur_time)
              for f in first.values()]
    points.sort(key=lambda t: (t.occur_time, t.message_id))
    return points


def touchpoints(history: Sequence[TouchFact], times: Sequence[datetime], at: datetime,
                lookback: timedelta) -> list[Touchpoint]:
    """The touchpoints of a conversion at ``at`` from one profile's touch facts (sorted by time;
    ``times`` are their times)."""
    lo = bisect.bisect_left(times, at - lookback)
    hi = bisect.bisect_right(times, at)
    return _first_per_message(history[lo:hi])


def position_weights(n: int) -> list[float]:
    """40/20/40: one touch takes all, two split 50/50, the middle shares 20%."""
    if n == 1:
        return [1.0]
    if n == 2:
        return [0.5, 0.5]
    return [0.4] + [0.2 / (n - 2)] * (n - 2) + [0.4]


def time_decay_weights(points: Sequence[Touchpoint], half_life_hours: float) -> list[float]:
    """2^(-age / half-life), up to a common factor: ages are taken from the newest touchpoint
    (weight 1), not from the conversion, so a short half-life or old touchpoints never make
    every weight underflow to 0 (which ``allocate`` would split equally)."""
    newest = max(t.occur_time for t in points)
    return [2.0 ** (-((newest - t.occur_time).total_seconds() / 3600.0) / half_life_hours)
            for t in points]


Weigher = Callable[[Sequence[Touchpoint], Conversion], list[float]]


def weigher(model: Model, half_life_hours: float,
            removal_effects: dict[int, float] | None = None) -> Weigher:
    def first(points: Sequence[Touchpoint], _: Conversion) -> list[float]:
        return [1.0] + [0.0] * (len(points) - 1)

    def last(points: Sequence[Touchpoint], _: Conversion) -> list[float]:
        return [0.0] * (len(points) - 1) + [1.0]

    def linear(points: Sequence[Touchpoint], _: Conversion) -> list[float]:
        return [1.0] * len(points)

    def decay(points: Sequence[Touchpoint], _: Conversion) -> list[float]:
        return time_decay_weights(points, half_life_hours)

    def position(points: Sequence[Touchpoint], _: Conversion) -> list[float]:
        return position_weights(len(points))

    effects = removal_effects or {}

    def data_driven(points: Sequence[Touchpoint], _: Conversion) -> list[float]:
        per_channel: dict[int, int] = defaultdict(int)
        for t in points:
            per_channel[t.channel] += 1
        # Each channel's removal effect is shared by its touches; all-zero falls back to equal.
        return [effects.get(t.channel, 0.0) / per_channel[t.channel] for t in points]

    return {Model.FIRST_TOUCH: first, Model.LAST_TOUCH: last, Model.LINEAR: linear,
            Model.TIME_DECAY: decay, Model.POSITION_BASED: position,
            Model.DATA_DRIVEN: data_driven}[model]


def attribute(model: Model, conversions: Iterable[tuple[Conversion, Sequence[Touchpoint]]],
              half_life_hours: float = 168.0, removal_effects: dict[int, float] | None = None,
              keep_conversions: int = 0) -> ModelResult:
    """Credit each conversion with at least one touchpoint to its touchpoints; the first
    ``keep_conversions`` conversions are kept for the reply, those without a touchpoint with an
    empty list."""
    weigh = weigher(model, half_life_hours, removal_effects)
    result = ModelResult(model)
    for conversion, points in conversions:
        credited: list[CreditedTouch] = []
        if points:
            weights = weigh(points, conversion)
            shares = allocate(MICROS, weights)
            revenues = allocate(to_micros(conversion.revenue), weights)
            credited = [CreditedTouch(t, s, r) for t, s, r in zip(points, shares, revenues,
                                                                  strict=True)]
        for c in credited:
            for bucket in (result.channels[c.touch.channel], result.journeys[c.touch.journey_id],
                           result.content_items[c.touch.content_key]):
                bucket.conversions_micros += c.share_micros
                bucket.revenue_micros += c.revenue_micros
        if len(result.conversions) < keep_conversions:
            result.conversions.append((conversion, credited))
    return result


CONVERSION = "conversion"
NULL = "null"
START = "start"


def conversion_probability(transitions: dict[object, dict[object, int]],
                           removed: object | None = None) -> float:
    """P(reaching CONVERSION from START) of the absorbing Markov chain whose transition counts
    are given, with ``removed`` (if any) turned into NULL. Solves (I - Q) x = b by Gaussian
    elimination with partial pivoting (a handful of states)."""
    states = [s for s in transitions if s not in (CONVERSION, NULL) and s != removed]
    index = {s: i for i, s in enumerate(states)}
    n = len(states)
    matrix = [[0.0] * (n + 1) for _ in range(n)]
    for s, i in index.items():
        outgoing = transitions[s]
        total = sum(outgoing.values())
        matrix[i][i] += 1.0
        if total == 0:
            continue
        for target, count in outgoing.items():
            p = count / total
            if target == CONVERSION:
                matrix[i][n] += p
            elif target in index:
                matrix[i][index[target]] -= p
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(matrix[r][col]))
        if abs(matrix[pivot][col]) < 1e-15:
            continue
        matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
        for r in range(n):
            if r != col and matrix[r][col] != 0.0:
                factor = matrix[r][col] / matrix[col][col]
                for k in range(col, n + 1):
                    matrix[r][k] -= factor * matrix[col][k]
    if START not in index:
        return 0.0
    i = index[START]
    return matrix[i][n] / matrix[i][i] if matrix[i][i] else 0.0


def transition_counts(paths: Iterable[tuple[Sequence[int], bool]]
                      ) -> dict[object, dict[object, int]]:
    """start -> channel ... -> conversion | null, counted over the paths."""
    counts: dict[object, dict[object, int]] = defaultdict(lambda: defaultdict(int))
    for channels, converted in paths:
        if not channels:
            continue
        sequence: list[object] = [START, *channels, CONVERSION if converted else NULL]
        for a, b in itertools.pairwise(sequence):
            counts[a][b] += 1
    return counts


def removal_effects(paths: Iterable[tuple[Sequence[int], bool]]) -> dict[int, float]:
    """Removal effect of each channel: the share of conversion probability lost without it."""
    counts = transition_counts(paths)
    base = conversion_probability(counts)
    channels = [s for s in counts if s not in (START, CONVERSION, NULL)]
    if base <= 0:
        return {int(c): 0.0 for c in channels}  # type: ignore[call-overload]
    return {int(c): max(0.0, 1.0 - conversion_probability(counts, c) / base)  # type: ignore[call-overload]
            for c in channels}


Path = tuple[list[int], bool]
"""A Markov path: the channels of its touchpoints in order, and whether it ended in a
conversion."""


def markov_paths(conversions: Sequence[Conversion], touches: Mapping[str, Sequence[TouchFact]],
                 start: datetime, end: datetime, lookback: timedelta) -> list[Path]:
    """The paths the data-driven model learns from, over the span [start - lookback, end).

    Each profile's touch facts in the span are cut by its conversions in the span (a touch at
    the instant of a conversion goes before it); so every touch of the span lies on exactly one
    path, and a message counts once per path, at its first fact on it:

    - the touches up to a conversion in the window [start, end), since the profile's previous
      conversion, make a converting path;
    - the touches up to a conversion before the window belong to that earlier conversion (an
      earlier window's path): no path here, neither converting nor non-converting;
    - the touches after the profile's last conversion make a non-converting (null) path: the
      profile had not converted again by the end of the window.

    A profile converting several times has one path per conversion. Paths without a touch are
    left out (they would credit nobody). Nothing before the span or from ``end`` on is read.
    Each profile's touch facts are in time order, ties by message id (so a path lists its
    messages as ``touchpoints`` does)."""
    span_start = start - lookback
    cuts: dict[str, list[Conversion]] = defaultdict(list)
    for c in sorted(conversions, key=lambda c: (c.occur_time, c.fact_id)):
        if span_start <= c.occur_time < end:
            cuts[c.profile_id].append(c)
    paths: list[Path] = []
    for profile in sorted(touches):
        ends = cuts.get(profile, [])
        taken = 0
        seen: set[str] = set()
        channels: list[int] = []
        for fact in touches[profile]:
            if fact.occur_time < span_start:
                continue
            if fact.occur_time >= end:
                break
            while taken < len(ends) and ends[taken].occur_time < fact.occur_time:
                if channels and ends[taken].occur_time >= start:
                    paths.append((channels, True))
                seen, channels = set(), []
                taken += 1
            if fact.message_id not in seen:
                seen.add(fact.message_id)
                channels.append(fact.channel)
        if taken < len(ends):  # the touches since the last cut end at the next conversion
            if channels and ends[taken].occur_time >= start:
                paths.append((channels, True))
        elif channels:
            paths.append((channels, False))
    return paths


@dataclass(frozen=True)
class Attribution:
    conversions: int
    attributed_conversions: int
    attributed_revenue_micros: int
    unattributed_revenue_micros: int
    models: list[ModelResult]

    @property
    def unattributed_conversions(self) -> int:
        """Conversions of the window without a touchpoint in their lookback."""
        return self.conversions - self.attributed_conversions


def attribute_all(conversions: Sequence[Conversion], touches: Mapping[str, Sequence[TouchFact]],
                  models: Sequence[Model], lookback: timedelta, half_life_hours: float,
                  keep_conversions: int = 0, *, start: datetime, end: datetime
                  ) -> Attribution:
    """Every requested model over the conversions of the window [start, end) and the profiles'
    touch facts (each list in time order, ties by message id). ``conversions`` may also hold
    the conversions of [start - lookback, start): they are not credited, they only end the
    data-driven model's paths (``markov_paths``)."""
    times = {profile: [t.occur_time for t in history] for profile, history in touches.items()}
    in_window = sorted((c for c in conversions if start <= c.occur_time < end),
                       key=lambda c: (c.occur_time, c.fact_id))
    paths = [(c, touchpoints(touches.get(c.profile_id, []), times.get(c.profile_id, []),
                             c.occur_time, lookback)) for c in in_window]
    effects: dict[int, float] | None = None
    if Model.DATA_DRIVEN in models:
        effects = removal_effects(markov_paths(conversions, touches, start, end, lookback))
    attributed_revenue = sum(to_micros(c.revenue) for c, p in paths if p)
    return Attribution(
        conversions=len(in_window),
        attributed_conversions=sum(1 for _, p in paths if p),
        attributed_revenue_micros=attributed_revenue,
        unattributed_revenue_micros=sum(to_micros(c.revenue) for c in in_window)
        - attributed_revenue,
        models=[attribute(m, paths, half_life_hours, effects, keep_conversions)
                for m in models],
    )
