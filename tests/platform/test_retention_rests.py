"""A retention drain rests after each batch in proportion to how long it took
(CJO_<SERVICE>_RETENTION_BUSY_PERCENT), so on SQLite the service's own writes get the only
writer between batches instead of queueing behind a whole drain; PostgreSQL drains on by
default."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

import pytest
from retention_support import NOW, service_db

from cjo_orchestration.adapters.retention import RULES
from cjo_orchestration.adapters.tables import inbox
from cjo_platform.config import Env
from cjo_platform.db import retention
from support import Backend

BATCH_SECONDS = 0.25  # what every batch takes, by the fake clock


@pytest.mark.parametrize("percent", ["", "20"])
async def test_a_drain_rests_after_each_batch(backend: Backend, percent: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = count()
    monkeypatch.setattr(retention, "perf_counter", lambda: next(ticks) * BATCH_SECONDS)
    rests: list[float] = []

    async def rest(seconds: float) -> None:
        rests.append(seconds)

    monkeypatch.setattr(retention, "sleep", rest)
    with service_db("orchestration", backend) as db:
        db.insert(inbox, [{"workspace_id": "w", "event_id": f"e{i}", "profile_id": "p",
                           "properties": {}, "traits": {}, "processed": True,
                           "receive_time": NOW - timedelta(days=10)} for i in range(5)])
        settings = {"CJO_ORCHESTRATION_RETENTION_BATCH": "2",
                    "CJO_ORCHESTRATION_RETENTION_STEPS_DAYS": "0"}
        if percent:
            settings["CJO_ORCHESTRATION_RETENTION_BUSY_PERCENT"] = percent
        env = Env(settings)
        worker = db.storage.retention(env, "orchestration", RULES)
        env.check()
        rounds = 1
        while await worker.run_once():
            rounds += 1
        assert db.rows(inbox, inbox.c.event_id) == []
    # A batch of each kind a round (the request log, the inbox, ended enrollments).
    batches = 3 * rounds
    assert rounds == 3
    if percent:
        assert rests == pytest.approx([BATCH_SECONDS * 4] * batches)
    elif backend.kind == "sqlite":
        assert rests == pytest.approx([BATCH_SECONDS] * batches)
    else:
        assert rests == []
