"""Every service forgets request ids after CJO_<SERVICE>_RETENTION_REQUEST_LOG_DAYS (7 by
default) and keeps its dead letters (unresolved by definition) unless told otherwise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from retention_support import NOW, service_db
from sqlalchemy import Table

from support import Backend

SERVICES = ["identity", "content", "orchestration", "delivery", "analytics", "decisioning"]


@pytest.mark.parametrize("service", SERVICES)
async def test_request_log_and_dead_letters(service: str, backend: Backend) -> None:
    if backend.kind == "postgresql" and service != "delivery":
        pytest.skip("the mechanism is the same for every service; one on PostgreSQL is enough")
    with service_db(service, backend) as db:
        requests: Table = db.storage.requests.table
        letters: Table = db.storage.dead_letters.table
        db.insert(requests, [{"workspace_id": "w1", "method": "/m", "request_id": f"r{age}",
                              "request_hash": "h", "response": b"",
                              "create_time": NOW - timedelta(days=age)}
                             for age in (0, 6, 8, 30)])
        db.insert(letters, [{"workspace_id": "w1", "source": "s", "payload": b"",
                             "first_failed_time": NOW - timedelta(days=age),
                             "last_failed_time": NOW - timedelta(days=age)}
                            for age in (1, 400)])
        removed = await db.retain(**({"events": 0} if service == "identity" else {}))
        assert removed["request_log"] == 2
        assert [r.request_id for r in db.rows(requests, requests.c.request_id)] == ["r0", "r6"]
        assert len(db.rows(letters, letters.c.id)) == 2
        assert (await db.retain(dead_letters=30))["dead_letters"] == 1
