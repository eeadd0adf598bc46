"""Decisioning's queue depths for operators (cjo_platform.metrics): outcomes known (rewarded, or
a reward window that lapsed) that the learning worker has not yet applied to the models, and
how far behind the clock identity's forwarding watermark of the rewards is (domain.watermarks:
lapsed windows wait for it)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from cjo_decisioning.adapters import watermarks
from cjo_decisioning.adapters.outcomes import count_learnable
from cjo_decisioning.domain.watermarks import EVENTS, LearningCutoffs
from cjo_platform.metrics import Gauge, Probe, Reading, age_seconds

UNLEARNED = Gauge("cjo.decisioning.outcomes.unlearned",
                  "Decision outcomes known and not yet learned by the models (learning lag)")
WATERMARK_LAG = Gauge(
    "cjo.decisioning.rewards.watermark_lag",
    "How far behind the clock the forwarding watermark of the rewards is, for the workspace "
    "furthest behind (absent: never reported; lapsed windows wait the grace alone)", "s")
BEHIND = Gauge("cjo.decisioning.rewards.workspaces_behind",
               "Workspaces whose rewards' forwarding watermark is behind the others'")


def read(session: Session, now: datetime) -> Iterable[Reading]:
    # Windows closed by now (the grace not counted), as before watermarks.
    yield Reading(UNLEARNED.name, count_learnable(session, LearningCutoffs(now)))
    held = watermarks.load(session, EVENTS)
    if held is not None:
        attributes = {"stream": EVENTS}
        yield Reading(WATERMARK_LAG.name, age_seconds(now, held.oldest()), attributes)
        yield Reading(BEHIND.name, len(held.behind), attributes)


PROBE = Probe("decisioning", [UNLEARNED, WATERMARK_LAG, BEHIND], read)
