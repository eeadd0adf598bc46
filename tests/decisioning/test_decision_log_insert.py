"""The decision log's insert: its JSON columns are encoded by the adapter (msgspec, with parts a
batch shares encoded once) and must read back exactly as SQLAlchemy's JSON type would have
written them, on SQLite and PostgreSQL, through both of PostgreSQL's insert paths (a plain
INSERT below the COPY threshold, COPY from it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from decision_log_support import log_server
from sqlalchemy import select

from cjo_decisioning.adapters import decisions as log
from cjo_decisioning.adapters.tables import EXPOSED, decisions
from cjo_platform.db.bulk import COPY_THRESHOLD
from support import Backend

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
CONTEXT = {"channel": "email", "attributes": {"ville": "Zürich", "n": 3, "ok": True},
           "time": NOW.isoformat(), "journey_id": "", "enrollment_id": "", "node_id": ""}
CONTENTS = [{"channel": "email", "content_key": "größe-😀"}]


def row(index: int, context: Any, contents: Any) -> dict[str, Any]:
    at = NOW + timedelta(seconds=index)
    return {
        "workspace_id": "ws", "decision_id": f"d{index}", "decision_point": "p",
        "profile_id": f"person-{index}", "action": "a", "pick_probability": 0.25,
        "control": False, "request_id": "", "decide_time": at,
        "decide_hour": int(at.timestamp() // 3600),
        "candidates": [{"action": "a", "propensity": 0.1 * index, "score": 1e-300,
                        "pick_probability": 0.25, "value": 1.0, "lever": 2.5,
                        "context_weight": 1.0, "contents": contents, "mandatory": False,
                        "transactional": False, "topic": "ünïcode", "control": False,
                        "returned": True}],
        "ineligible": [{"action": "b", "reason": "ELIGIBILITY_RULE", "detail": 'a "quote"'}],
        "features": {"i": [0, 17, 4095], "v": [1.0, 0.5773502691896258, -0.25]},
        "context": context, "outcome": EXPOSED, "expose_time": at,
        "reward_deadline": at + timedelta(hours=1), "reward_time": None,
        "reward_event_id": "", "learned": False, "lease_owner": "", "lease_until": None}


@pytest.mark.parametrize("count", [2, COPY_THRESHOLD + 3])
async def test_logged_json_reads_back_as_written(backend: Backend, count: int) -> None:
    # The shared parts as fragments (encoded once) in every row but the first, which has them
    # as plain values: both read back as the same JSON.
    context, contents = log.fragment(CONTEXT), log.fragment(CONTENTS)
    rows = [row(0, CONTEXT, CONTENTS)] + [row(i, context, contents) for i in range(1, count)]
    async with log_server(backend) as server:
        with server.db.transaction() as session:
            log.insert(session, rows)
        with server.db.transaction() as session:
            stored = session.execute(
                select(decisions.c.decision_id, decisions.c.candidates, decisions.c.ineligible,
                       decisions.c.features, decisions.c.context, decisions.c.decide_time)
                .order_by(decisions.c.decide_time)).mappings().all()
    assert [r["decision_id"] for r in stored] == [f"d{i}" for i in range(count)]
    for index, found in enumerate(stored):
        expected = row(index, CONTEXT, CONTENTS)
        for key in ("candidates", "ineligible", "features", "context", "decide_time"):
            assert found[key] == expected[key], key
