"""Decisioning's queue depth for operators (cjo_platform.metrics): outcomes known (rewarded, or
a reward window that lapsed) that the learning worker has not yet applied to the models."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from cjo_decisioning.adapters.outcomes import count_learnable
from cjo_platform.metrics import Gauge, Probe, Reading

UNLEARNED = Gauge("cjo.decisioning.outcomes.unlearned",
                  "Decision outcomes known and not yet learned by the models (learning lag)")


def read(session: Session, now: datetime) -> Iterable[Reading]:
    yield Reading(UNLEARNED.name, count_learnable(session, now))


PROBE = Probe("decisioning", [UNLEARNED], read)
