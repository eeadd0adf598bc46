"""`cjo import` of the files people really have (review hident), on SQLite and PostgreSQL: a
CSV row with a stray column is rejected alone (no traceback) and, fixed in place, imported on
the next run with the other rows' ids unchanged (nothing twice); rejected rows of an
interrupted import are reported by the resumed run; a checkpoint is refused for a file whose
imported rows changed; Excel's byte order mark is not part of the first column's name; rows of
40 KB go in batches below the gRPC message limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cjo_cli.importer import checkpoint_path
from cli_support import cjo_for, events_of_user, lookup, new_workspace
from suite import Suite, running_suite
from support import Backend

pytestmark = pytest.mark.e2e


async def count_events(suite: Suite, key: str, user_id: str) -> int:
    return len(await events_of_user(suite, key, user_id))


@pytest.mark.timeout(600)
async def test_bad_files(backend: Backend, tmp_path: Path) -> None:
    async with running_suite(backend, tmp_path) as suite:
        key = await new_workspace(suite, "acme")
        cjo = cjo_for(suite, key, tmp_path / "config")

        # A stray trailing column on one row of 3,000.
        orders = tmp_path / "orders.csv"
        rows = ["user_id,name,amount"] + [f"u1,order_placed,{i}" for i in range(3000)]
        rows[2500] = "u1,order_placed,2499,EXTRA"
        orders.write_text("\n".join(rows) + "\n")
        first = await cjo("import", "events", str(orders), check=False)
        assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
        assert "2999 accepted, 0 already imported, 1 rejected" in first.stdout, first.stdout
        assert "1 extra field" in first.stderr and "2501" in first.stderr, first.stderr
        # The checkpoint stays while rows are rejected: a file whose imported rows changed is
        # refused (resuming it would skip rows by their lines) and nothing is sent.
        edited = list(rows)
        edited[10] = "u1,order_placed,changed"
        orders.write_text("\n".join(edited) + "\n")
        refused = await cjo("import", "events", str(orders), check=False)
        assert refused.returncode == 1 and "changed since" in refused.stderr, refused.stderr
        # Fixed in place: only that row is sent, the others keep their ids.
        rows[2500] = "u1,order_placed,2499"
        orders.write_text("\n".join(rows) + "\n")
        fixed = await cjo("import", "events", str(orders))
        assert "1 accepted, 0 already imported, 0 rejected, 2999 skipped" in fixed.stdout, (
            fixed.stdout)
        # Done, the checkpoint kept (its ids hold the file as it began): the same file again
        # imports nothing (review rimport: every row was stored twice, 6,000 events).
        assert checkpoint_path(orders).exists()
        again = await cjo("import", "events", str(orders))
        assert "0 accepted, 0 already imported, 0 rejected, 3000 skipped" in again.stdout, (
            again.stdout)
        assert await count_events(suite, key, "u1") == 3000

        # Rejected rows of an interrupted import are reported by the run that resumes it.
        clicks = tmp_path / "clicks.ndjson"
        with clicks.open("w") as f:
            for i in range(5000):
                row: dict[str, object] = {"name": "page_viewed", "user_id": f"c{i % 50}",
                                          "page": f"/p/{i}"}
                if i == 3:
                    row = {"name": "page_viewed", "page": "/no-identifier"}
                if i == 4:
                    row["timestamp"] = "yesterday"
                f.write(json.dumps(row) + "\n")
        stopped = await cjo("import", "events", str(clicks), "--max-batches", "2", check=False)
        assert "stopped early" in stopped.stdout, stopped.stdout
        resumed = await cjo("import", "events", str(clicks), check=False)
        assert resumed.returncode == 1, resumed.stdout
        assert "0 already imported, 2 rejected" in resumed.stdout, resumed.stdout
        assert "identifiers" in resumed.stderr and "timestamp" in resumed.stderr, resumed.stderr
        assert await count_events(suite, key, "c7") == 100

        # Excel's "CSV UTF-8" starts with a byte order mark.
        customers = tmp_path / "customers.csv"
        customers.write_bytes("\ufeffuser_id,email,plan\n42,ada@example.com,gold\n".encode())
        await cjo("import", "profiles", str(customers))
        traits = dict((await lookup(suite, key, "user_id", "42")).traits)
        assert traits["plan"] == "gold" and not any("user_id" in t for t in traits), traits

        # 900 rows of 40 KB: 36 MB, more than one gRPC message may carry.
        big = tmp_path / "big.ndjson"
        with big.open("w") as f:
            for i in range(900):
                f.write(json.dumps({"name": "doc_viewed", "user_id": f"b{i}",
                                    "body": "x" * 40_000}) + "\n")
        done = await cjo("import", "events", str(big), timeout=300)
        assert "900 accepted, 0 already imported, 0 rejected" in done.stdout, done.stdout
