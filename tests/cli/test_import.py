"""`cjo import`: 100,000 events from an NDJSON file, all accepted and visible in identity;
rejected rows summarised with their reasons and a non-zero exit; an import stopped after some
batches resumes from its checkpoint and applies nothing twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cjo_cli.importer import checkpoint_path
from cli_support import cjo_for, events_of_user, lookup, new_workspace
from suite import Suite, running_suite
from support import Backend

pytestmark = pytest.mark.e2e


def write_events(path: Path, rows: int, people: int) -> None:
    with path.open("w") as f:
        for i in range(rows):
            f.write(json.dumps({"name": "page_viewed", "user_id": f"u{i % people}",
                                "page": f"/p/{i}"}) + "\n")


async def events_of(suite: Suite, key: str, user_id: str) -> list[str]:
    return [e.properties["page"] for e in await events_of_user(suite, key, user_id)]


async def plan_of(suite: Suite, key: str, user_id: str) -> str:
    return str((await lookup(suite, key, "user_id", user_id)).traits["plan"])


# Identity ingests ~2,400 events/s on an idle 2-core machine; a busy one takes minutes.
@pytest.mark.timeout(900)
async def test_import_100000_events_with_progress(sqlite_backend: Backend,
                                                  tmp_path: Path) -> None:
    async with running_suite(sqlite_backend, tmp_path) as suite:
        key = await new_workspace(suite, "acme")
        cjo = cjo_for(suite, key, tmp_path / "config")
        data = tmp_path / "events.ndjson"
        write_events(data, 100_000, people=1_000)

        done = await cjo("import", "events", str(data), "--progress", timeout=800)
        assert "100000 accepted, 0 already imported, 0 rejected" in done.stdout, done.stdout
        assert "100000/100000" in done.stderr  # the progress bar's last state
        assert not checkpoint_path(data).exists()
        pages = await events_of(suite, key, "u7")
        assert len(pages) == 100 and "/p/99007" in pages


async def test_bad_rows_and_resume(sqlite_backend: Backend, tmp_path: Path) -> None:
    async with running_suite(sqlite_backend, tmp_path) as suite:
        key = await new_workspace(suite, "acme")
        cjo = cjo_for(suite, key, tmp_path / "config")

        bad = tmp_path / "bad.ndjson"
        bad.write_text("\n".join([
            json.dumps({"name": "signed_up", "user_id": "ok-1"}),
            "{not json",
            json.dumps({"name": "signed_up"}),  # no identifier
            json.dumps({"name": "signed_up", "user_id": "ok-2", "timestamp": "yesterday"}),
            json.dumps({"name": "signed_up", "user_id": "ok-3"}),
        ]) + "\n")
        done = await cjo("import", "events", str(bad), check=False)
        assert done.returncode == 1
        assert "2 accepted, 0 already imported, 3 rejected" in done.stdout, done.stdout
        assert "not JSON" in done.stderr and "identifiers" in done.stderr, done.stderr
        assert "timestamp" in done.stderr

        data = tmp_path / "resume.ndjson"
        write_events(data, 5_000, people=50)
        stopped = await cjo("import", "events", str(data), "--max-batches", "2")
        assert "2000 accepted" in stopped.stdout and "stopped early" in stopped.stdout
        assert json.loads(checkpoint_path(data).read_text())["line"] == 2000
        resumed = await cjo("import", "events", str(data))
        assert "3000 accepted, 0 already imported, 0 rejected, 2000 skipped" in resumed.stdout
        assert not checkpoint_path(data).exists()
        # Each person's 100 events once: nothing of the first run applied again.
        assert sorted(await events_of(suite, key, "u3")) == sorted(
            f"/p/{i}" for i in range(3, 5_000, 50))
        # Run again from the start: every row is recognised by its message id.
        again = await cjo("import", "events", str(data))
        assert "0 accepted, 5000 already imported" in again.stdout
        # A renamed copy is the same rows: ids come from what a row says, not the file's name.
        copy = tmp_path / "renamed copy.ndjson"
        copy.write_text(data.read_text())
        renamed = await cjo("import", "events", str(copy))
        assert "0 accepted, 5000 already imported" in renamed.stdout, renamed.stdout

        # The same row in another file is another event (ids hold the file's content too).
        other = tmp_path / "other.ndjson"
        first = data.read_text().splitlines()[0]
        other.write_text(first + "\n" + json.dumps({"name": "page_viewed", "user_id": "u3",
                                                     "page": "/other"}) + "\n")
        assert "2 accepted, 0 already imported" in (
            await cjo("import", "events", str(other))).stdout
        # Daily profile snapshots (Wednesday's file is Monday's, byte for byte): state applied
        # again, not a duplicate.
        for day, plan in (("monday", "gold"), ("tuesday", "silver"), ("wednesday", "gold")):
            snapshot = tmp_path / f"profiles-{day}.csv"
            snapshot.write_text(f"user_id,plan\n42,{plan}\n")
            imported = await cjo("import", "profiles", str(snapshot))
            assert "1 accepted, 0 already imported" in imported.stdout, (day, imported.stdout)
        assert await plan_of(suite, key, "42") == "gold"
