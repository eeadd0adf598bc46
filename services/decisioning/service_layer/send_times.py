"""GetSendTimes: the best hour to reach each person, from their opens and clicks per UTC hour
blended with the workspace's (domain.send_times), in one query for the whole call."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cjo_decisioning.adapters import engagement
from cjo_decisioning.domain.send_times import best_send_time
from cjo_platform.db.unit_of_work import UnitOfWork


def send_times(uow: UnitOfWork, workspace_id: str, profile_ids: Sequence[str], channel: int,
               earliest: datetime, max_delay: timedelta
               ) -> list[tuple[datetime, str, int]]:
    """Per profile id, in order: (send time, source, the person's own observations)."""
    counts = engagement.hour_counts(uow.session, workspace_id, profile_ids, channel)
    none = [0.0] * engagement.HOURS
    population = counts.get(engagement.POPULATION, none)
    return [best_send_time(counts.get(profile_id, none), population, earliest, max_delay)
            for profile_id in profile_ids]
