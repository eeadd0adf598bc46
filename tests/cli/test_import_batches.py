"""`cjo import` against an in-process stand-in for identity (review hident): a call is never
larger than the gRPC message limit allows and one refused as too large does not stop the
import (batches are flushed at 4 MiB encoded, a refused batch is split and sent again, a row
too large even alone is rejected); rejected rows are kept in the checkpoint, sent again by the
next run (a resumed one too) and, fixed in place, imported without any other row's id
changing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.rpc import status_pb2

from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo_cli.importer import checkpoint_path, run_import

LIMIT = 1024 * 1024  # what the fake service takes in one call: less than a batch
TOO_LARGE = "Sent message larger than max (1048577 vs. 1048576)"  # gRPC's own words


@dataclass
class FakeIdentity:
    calls: list[int] = field(default_factory=list)  # encoded size of each call
    ids: list[str] = field(default_factory=list)  # message ids accepted

    async def IngestEvents(self, request: identity_pb.IngestEventsRequest,
                           metadata: object) -> identity_pb.IngestEventsResponse:
        self.calls.append(request.ByteSize())
        if request.ByteSize() > LIMIT:
            raise grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(),
                                       grpc.aio.Metadata(), details=TOO_LARGE)
        assert len(request.events) <= 1000
        results = []
        for event in request.events:
            if "bad" in event.properties:
                results.append(identity_pb.IngestEventResult(
                    status=status_pb2.Status(code=3, message="bad row")))
                continue
            results.append(identity_pb.IngestEventResult(duplicate=event.message_id in self.ids))
            self.ids.append(event.message_id)
        return identity_pb.IngestEventsResponse(results=results)


@dataclass
class FakeClient:
    identity: FakeIdentity = field(default_factory=FakeIdentity)
    metadata: tuple[tuple[str, str], ...] = ()


async def test_large_rows_are_sent_in_calls_below_the_limit(tmp_path: Path) -> None:
    data = tmp_path / "docs.ndjson"
    with data.open("w") as f:
        for i in range(15):
            f.write(json.dumps({"name": "doc_viewed", "user_id": f"u{i}",
                                "body": "x" * 100_000}) + "\n")
        # Larger than any call may be: rejected alone, the rows after it still imported.
        f.write(json.dumps({"name": "doc_viewed", "user_id": "huge",
                            "body": "x" * (LIMIT + 1)}) + "\n")
        f.write(json.dumps({"name": "doc_viewed", "user_id": "last"}) + "\n")
    client = FakeClient()
    summary = await run_import(client, "events", data)  # type: ignore[arg-type]
    assert summary.accepted == 16
    assert [(r.line, r.reason.split(" (")[0]) for r in summary.rejected] == [
        (16, "row: too large")]
    # The first batch (1.5 MB) was refused, then sent again in halves.
    assert client.identity.calls[0] > LIMIT and max(client.identity.calls) <= 4 * 1024 * 1024


async def test_rejected_rows_are_kept_until_fixed(tmp_path: Path) -> None:
    data = tmp_path / "clicks.ndjson"
    rows = [{"name": "page_viewed", "user_id": f"u{i % 7}", "page": f"/p/{i}"}
            for i in range(2500)]
    for i in range(0, 1500, 2):  # 750 rows identity rejects, among the first 1,500
        rows[i]["bad"] = True
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    client = FakeClient()
    stopped = await run_import(client, "events", data, max_batches=1)  # type: ignore[arg-type]
    # The first batch (lines 1 to 1,000) settled: its 500 rejected rows are in the checkpoint.
    assert stopped.stopped and len(stopped.rejected) == 500
    assert len(json.loads(checkpoint_path(data).read_text())["rejected"]) == 500
    # Resumed: the rejected rows are sent again, and reported again.
    resumed = await run_import(client, "events", data)  # type: ignore[arg-type]
    assert (resumed.accepted, resumed.duplicates, len(resumed.rejected)) == (1250, 0, 750)
    assert resumed.skipped == 500
    assert checkpoint_path(data).exists()
    first_ids = list(client.identity.ids)
    # Fixed in place: only those rows go, and no other row's id changed.
    for row in rows:
        row.pop("bad", None)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fixed = await run_import(client, "events", data)  # type: ignore[arg-type]
    assert (fixed.accepted, fixed.duplicates, len(fixed.rejected), fixed.skipped) == (
        750, 0, 0, 1750)
    assert len(set(client.identity.ids)) == 2500 and client.identity.ids[:1750] == first_ids
    # Done, but its ids hold the file as it began: the checkpoint stays (nothing rejected), so
    # the same file imported again sends nothing (review rimport: every row was stored twice).
    assert json.loads(checkpoint_path(data).read_text())["rejected"] == {}
    again = await run_import(client, "events", data)  # type: ignore[arg-type]
    assert (again.accepted, again.duplicates, len(again.rejected), again.skipped) == (
        0, 0, 0, 2500)
    assert len(client.identity.ids) == 2500


async def test_a_fixed_row_equal_to_a_later_row_is_its_own_event(tmp_path: Path) -> None:
    # Two identical clicks; the first rejected, then fixed in place (review rimport): it took
    # the second's occurrence number, so its id, and was acknowledged as a duplicate.
    data = tmp_path / "clicks.ndjson"
    click = {"name": "clicked", "user_id": "u1", "timestamp": "2026-12-01T10:00:00Z"}
    rows = [dict(click, bad=True)] + [{"name": "x", "user_id": f"u{i}"} for i in range(5)] + [
        dict(click)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    client = FakeClient()
    first = await run_import(client, "events", data)  # type: ignore[arg-type]
    assert (first.accepted, len(first.rejected)) == (6, 1)
    rows[0].pop("bad")
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fixed = await run_import(client, "events", data)  # type: ignore[arg-type]
    assert (fixed.accepted, fixed.duplicates, len(fixed.rejected)) == (1, 0, 0)
    assert len(set(client.identity.ids)) == 7


async def test_a_busy_server_is_not_a_row_too_large(tmp_path: Path) -> None:
    # RESOURCE_EXHAUSTED for a quota or a full queue stops the import (the checkpoint stays for
    # the next run) instead of splitting and rejecting every row as "too large".
    class Busy(FakeIdentity):
        async def IngestEvents(self, request: identity_pb.IngestEventsRequest,
                               metadata: object) -> identity_pb.IngestEventsResponse:
            raise grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(),
                                       grpc.aio.Metadata(), details="quota exceeded")

    data = tmp_path / "clicks.ndjson"
    data.write_text("".join(json.dumps({"name": "x", "user_id": f"u{i}"}) + "\n"
                            for i in range(3)))
    with pytest.raises(grpc.aio.AioRpcError):
        await run_import(FakeClient(Busy()), "events", data)  # type: ignore[arg-type]


async def test_a_resent_row_keeps_its_own_id_after_an_interrupted_run(tmp_path: Path) -> None:
    # Review rimport2 HIGH: a rejected row fixed into a copy of a later row, the run sending it
    # again lost after the later row's batch was stored but before the checkpoint; the next run
    # counted the fixed row among identical rows again and gave the later row another id.
    class Lost(FakeIdentity):
        lose_call: int | None = None

        async def IngestEvents(self, request: identity_pb.IngestEventsRequest,
                               metadata: object) -> identity_pb.IngestEventsResponse:
            answer = await super().IngestEvents(request, metadata)  # stored
            if len(self.calls) == self.lose_call:
                raise ConnectionError("connection lost after the server stored the batch")
            return answer

    data = tmp_path / "clicks.ndjson"
    rows = [{"name": "page_viewed", "user_id": f"u{i}", "page": f"/p/{i}"} for i in range(3000)]
    rows[4] = {"name": "page_viewed", "user_id": "u4", "bad": True}
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    client = FakeClient(Lost())
    await run_import(client, "events", data, max_batches=1)  # type: ignore[arg-type]
    rows[4] = dict(rows[2499])
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    client.identity.lose_call = len(client.identity.calls) + 2
    with pytest.raises(ConnectionError):
        await run_import(client, "events", data)  # type: ignore[arg-type]
    await run_import(client, "events", data)  # type: ignore[arg-type]
    assert len(set(client.identity.ids)) == 3000


async def test_a_profiles_file_fixed_in_place_applies_again(tmp_path: Path) -> None:
    # Review rimport2 MEDIUM: profiles are snapshots, applied again at each import; the
    # checkpoint kept for an events file fixed in place made a profiles file's next import
    # send nothing.
    data = tmp_path / "customers.ndjson"
    rows = [{"user_id": f"u{i}", "plan": "gold"} for i in range(5)]
    lines = [json.dumps(r) for r in rows]
    lines[2] = "[1]"  # not an object: rejected
    data.write_text("".join(line + "\n" for line in lines))
    client = FakeClient()
    await run_import(client, "profiles", data)  # type: ignore[arg-type]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    await run_import(client, "profiles", data)  # type: ignore[arg-type]
    again = await run_import(client, "profiles", data)  # type: ignore[arg-type]
    assert again.accepted == 5 and not checkpoint_path(data).exists()
