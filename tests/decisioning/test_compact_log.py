"""The decision log's two formats of the candidates: the compact one decisions are logged in
now (columns, service_layer.decide) and the first one (an object per candidate), which logs
written before still hold. Reports and off-policy evaluation must read the same decisions
the same way in either, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from decision_log_support import candidate, log_server, logged
from sqlalchemy import select

from cjo_decisioning.adapters import decision_log
from cjo_decisioning.adapters.tables import EXPOSED, NO_ACTION, NOT_REWARDED, REWARDED, decisions
from cjo_decisioning.service_layer.decide import COMPACT_KEYS, decision_from_row
from support import Backend

T0 = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
NOW = T0 + timedelta(days=30)
FIRST_FORMAT_KEYS = ("action", "propensity", "score", "pick_probability", "value", "lever",
                     "context_weight")


def compact(candidates: list[dict[str, Any]], returned: int) -> dict[str, Any]:
    """A logged decision's candidates (first format) as the compact log holds them."""
    first = candidates[0] if candidates else {}
    return {
        **{key: [c[name] for c in candidates]
           for key, name in zip(COMPACT_KEYS, FIRST_FORMAT_KEYS, strict=True)},
        "n": min(returned, len(candidates)), "m": bool(first.get("mandatory")),
        "r": bool(first.get("replaced")),
        "o": {c["action"]: {"contents": [{"channel": "email", "content_key": f"{c['action']}-1"}],
                            "mandatory": bool(c.get("mandatory")), "transactional": False,
                            "topic": "", "control": False} for c in candidates}}


def first_format(candidates: list[dict[str, Any]], returned: int) -> list[dict[str, Any]]:
    return [{**c, "contents": [{"channel": "email", "content_key": f"{c['action']}-1"}],
             "mandatory": bool(c.get("mandatory")), "transactional": False, "topic": "",
             "control": False, "returned": i < returned} for i, c in enumerate(candidates)]


def decisions_at(point: str) -> list[dict[str, Any]]:
    """Rewarded and failed decisions of 1-3 candidates, one mandatory winner, one replaced
    winner, one without an eligible action, one still exposed (not counted)."""
    rows = []
    for i in range(12):
        k = 1 + i % 3
        cands = [candidate(a, 0.05 * (j + 1) + 0.01 * i, 1.0 / k, value=1.0 + j, lever=0.5,
                           context_weight=2.0 - j * 0.5)
                 for j, a in enumerate("abc"[:k])]
        if i == 4:
            cands[0]["mandatory"] = True
        if i == 7:
            cands[0]["replaced"] = True
        rows.append(logged("ws", point, T0 + timedelta(minutes=i),
                           REWARDED if i % 4 == 0 else NOT_REWARDED, cands))
    rows.append(logged("ws", point, T0 + timedelta(minutes=20), NO_ACTION, []))
    rows.append(logged("ws", point, T0 + timedelta(minutes=21), EXPOSED,
                       [candidate("a", 0.2, 1.0)]))
    return rows


async def test_reports_and_evaluation_read_both_formats_alike(backend: Backend) -> None:
    old = decisions_at("old")
    new = decisions_at("new")
    for row in old:
        row["candidates"] = first_format(row["candidates"], 2)
    for row in new:
        row["candidates"] = compact(row["candidates"], 2)
    async with log_server(backend) as server:
        server.log(old + new)
        with server.db.transaction() as session:
            read = {point: decision_log.decided_with_outcome(session, "ws", point, None, NOW,
                                                              NOW)
                    for point in ("old", "new")}
            counts = {point: decision_log.action_counts(session, "ws", point, None, NOW, NOW)
                      for point in ("old", "new")}
            stored = {point: [decision_from_row(row) for row in session.execute(
                select(*decisions.c).where(decisions.c.decision_point == point)
                .order_by(decisions.c.decide_time)).mappings()]
                for point in ("old", "new")}
    old_log, new_log = read["old"], read["new"]
    assert len(new_log) == 12
    assert new_log.keys == old_log.keys == ("a", "b", "c")
    for name in ("action", "propensity", "value", "lever", "context_weight", "pick", "chosen",
                 "logged_probability", "reward", "reason"):
        assert np.array_equal(getattr(new_log, name), getattr(old_log, name)), name
    # Mandatory and replaced winners are told apart, the others are supported.
    assert sorted(np.flatnonzero(new_log.reason).tolist()) == [4, 7]
    def rounded(found: list[Any]) -> list[Any]:  # PostgreSQL's avg may add in any order
        return sorted((c.action, c.decisions, c.exposures, c.rewards, c.failures, c.pending,
                       round(c.mean_propensity, 12)) for c in found)

    assert rounded(counts["new"][0]) == rounded(counts["old"][0])
    assert {c.action for c in counts["new"][0]} == {"a", ""}
    assert counts["new"][1] == 1
    for old_one, new_one in zip(stored["old"], stored["new"], strict=True):
        assert old_one.actions == new_one.actions
        assert all(len(d.actions) <= 2 for d in stored["new"])
