"""The look-up of a batch's identifiers probes each one by the primary key, not every
identifier of the workspace per key through the workspace's cluster index: in a new database's
second batch (PostgreSQL planned it so for tables that had no statistics yet, until
autovacuum's first pass: 2.3 s for a 1,000-event batch instead of a few ms), and in a new
workspace's second batch in a table whose statistics know other workspaces only (planned so
for as long as the statistics did not know the workspace: a new tenant's import quadratic).
The same holds for the events already stored under the batch's message ids (the look-up's
third branch), probed by the unique (workspace_id, message_id) per id, not every event of the
workspace read through ix_events_profile_time and filtered by the ids. And for the other
reads by key, a batch's (its edges, its profiles, locked, and their stored events) and the
profile reads': each probed by the index on (workspace_id, key), not every row of the
workspace read through another index and filtered by the keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from identity_support import START, Identity
from query_plans import plans
from sqlalchemy import text
from sqlalchemy.orm import Session

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters import profiles, segments
from cjo_identity.adapters.tables import profile_merges, segment_members
from cjo_identity.domain.computed import Aggregation, ComputedTrait
from cjo_identity.domain.graph import edge_key
from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.protobuf import dict_to_struct
from support import as_service

BATCH = 1000


def visits(run: str) -> list[event_pb2.Event]:
    return [event_pb2.Event(
        message_id=f"{run}-{i}", type=event_pb2.EVENT_TYPE_TRACK, name="page_viewed",
        identifiers=[event_pb2.Identifier(type="user_id", value=f"{run}-u{i}")],
        properties=dict_to_struct({"path": f"/p/{i % 50}"}), source="web")
        for i in range(BATCH)]


async def first_batch(identity: Identity, workspace_id: str) -> set[str]:
    """The workspace's first batch; returns its profiles."""
    reply = await identity.events.IngestEvents(
        pb.IngestEventsRequest(events=visits(f"{workspace_id}-first")),
        metadata=as_service(workspace_id))
    assert all(r.event_id for r in reply.results)
    return {r.profile_id for r in reply.results}


async def second_batch_plans(identity: Identity, workspace_id: str) -> list[str]:
    """The plans of the look-up of a second batch's identifiers after a first batch."""
    await first_batch(identity, workspace_id)
    wanted = {Identifier("user_id", f"{workspace_id}-second-u{i}") for i in range(BATCH)}
    # The second batch's message ids, and the first's (a retry): the events already stored
    # under them are the look-up's third branch.
    message_ids = {m.message_id for m in visits(f"{workspace_id}-second")} | {
        m.message_id for m in visits(f"{workspace_id}-first")}
    return [plan for _, plan in plans(
        identity.app.db,
        lambda session: profiles.first_reads(session, workspace_id, wanted, message_ids),
        "identifiers")]


def assert_probed_by_key(identity: Identity, found: list[str]) -> None:
    for plan in found:
        if identity.app.db.is_sqlite:
            assert "SCAN t" not in plan, plan
            assert "(workspace_id=? AND message_id=?)" in plan, plan
        else:
            assert "identifiers_pkey" in plan and "ix_identifiers_cluster" not in plan, plan
            # The events already stored under the batch's message ids: by the unique
            # (workspace_id, message_id), not every event of the workspace through the index
            # on (workspace_id, profile_id, ...) filtered by the message ids.
            assert "uq_events_message" in plan and "ix_events_profile_time" not in plan, plan


async def test_the_second_batchs_owners_are_probed_by_the_primary_key(
        identity: Identity) -> None:
    assert_probed_by_key(identity, await second_batch_plans(identity, "acme"))


async def test_a_new_workspaces_second_batch_is_probed_by_the_primary_key(
        identity: Identity) -> None:
    await second_batch_plans(identity, "acme")  # the statistics know acme
    assert_probed_by_key(identity, await second_batch_plans(identity, "newcomer"))


async def assert_reads_probed_by_key(identity: Identity, workspace_id: str) -> None:
    """After a first batch, the reads by key of a second batch (its edges, its profiles,
    locked, and their stored events) and of the profile reads (orchestration's per step,
    delivery's consent per send) each search the index on (workspace_id, key): the key an
    index condition, not a filter over the workspace's rows."""
    ids = await first_batch(identity, workspace_id)
    edge_keys = {edge_key([Identifier("user_id", f"{workspace_id}-first-u{i}")])
                 for i in range(BATCH)}
    reads: list[tuple[str, str, Callable[[Session], object]]] = [
        ("edges", "edge_key", lambda s: profiles.edge_firsts(s, workspace_id, edge_keys)),
        ("profiles", "profile_id", lambda s: profiles.golden_for_update(s, workspace_id, ids)),
        ("events", "profile_id", lambda s: profiles.stored_refs(s, workspace_id, ids)),
        ("profiles", "profile_id", lambda s: profiles.golden_of(s, workspace_id, ids)),
        ("profiles", "profile_id", lambda s: profiles.consents_of(s, workspace_id, ids)),
        ("profiles", "profile_id", lambda s: profiles.existing_profiles(s, workspace_id, ids))]
    reads += [(table, "profile_id", lambda s: profiles.load_profiles(s, workspace_id, sorted(ids)))
              for table in ("profiles", "identifiers")]
    for table, key, read in reads:
        for _, plan in plans(identity.app.db, read, f" {table} "):
            if identity.app.db.is_sqlite:
                assert f"{key}=?" in plan, plan
            else:
                assert any(re.search(rf"\b{key}\b", line) for line in plan.splitlines()
                           if "Index Cond" in line), plan


async def test_the_second_batchs_reads_by_key_are_probed_by_key(identity: Identity) -> None:
    await assert_reads_probed_by_key(identity, "acme")


async def test_a_new_workspaces_reads_by_key_are_probed_by_key(identity: Identity) -> None:
    await first_batch(identity, "acme")  # the statistics know acme
    await assert_reads_probed_by_key(identity, "newcomer")


async def test_a_new_workspaces_merges_and_memberships_are_probed_by_profile(
        identity: Identity) -> None:
    """The merges and segment memberships of a workspace the statistics do not know (the
    survivors of merged ids, a profile read's merges into it and memberships) are probed by
    the index on (workspace_id, profile id), not read whole through another index with the
    workspace as prefix and filtered by the profiles (SQLite, which has no statistics here,
    read the memberships through the primary key's workspace prefix)."""
    db = identity.app.db

    def rows(workspace_id: str) -> None:
        with db.transaction() as session:
            session.execute(profile_merges.insert(), [{
                "workspace_id": workspace_id, "merged_profile_id": f"m{i}",
                "survivor_profile_id": f"s{i % 1500}", "identifier_type": "user_id",
                "identifier_value": f"u{i}", "message_id": f"msg{i}", "merge_time": START}
                for i in range(3000)])
            session.execute(segment_members.insert(), [{
                "workspace_id": workspace_id, "segment_id": f"seg{i // 1500}",
                "profile_id": f"s{i % 1500}", "enter_time": START} for i in range(3000)])

    rows("acme")
    if not db.is_sqlite:
        with db.transaction() as session:
            session.execute(text("ANALYZE profile_merges"))
            session.execute(text("ANALYZE segment_members"))
    rows("newcomer")  # the statistics know acme only
    ids = [f"s{i}" for i in range(0, 300, 3)]
    reads: list[tuple[str, str, Callable[[Session], object]]] = [
        ("profile_merges", "merged_profile_id",
         lambda s: profiles.resolve_profile_ids(s, "newcomer", [f"m{i}" for i in range(100)])),
        ("profile_merges", "survivor_profile_id",
         lambda s: profiles.load_profiles(s, "newcomer", ids)),
        ("segment_members", "profile_id", lambda s: profiles.load_profiles(s, "newcomer", ids))]
    filtered = [f"{statement}\n{plan}" for table, key, read in reads
                for statement, plan in plans(db, read, f" {table} ")
                if not (db.is_sqlite and f"{key}=?" in plan)
                and not any(re.search(rf"\b{key}\b", line) for line in plan.splitlines()
                            if "Index Cond" in line)]
    assert not filtered, "\n\n".join(filtered)


async def test_a_new_workspaces_segment_reads_are_probed_by_profile(
        identity: Identity) -> None:
    """A batch's reads by profile in segments.py, for a workspace the statistics do not know:
    the memberships its segments are evaluated against, the stored states (memberships,
    identifiers, computed traits) forwarded with its events, and the events its computed
    traits count. Each probes the index on (workspace_id, profile_id) per profile; with the
    workspace a constant, PostgreSQL read the new workspace's every membership, identifier,
    profile or event through an index's workspace prefix and filtered by the profiles."""
    db = identity.app.db

    async def fill(workspace_id: str) -> list[str]:
        ids = sorted(await first_batch(identity, workspace_id))
        with db.transaction() as session:
            session.execute(segment_members.insert(), [{
                "workspace_id": workspace_id, "segment_id": f"seg{i % 3}", "profile_id": p,
                "enter_time": START} for i, p in enumerate(ids)])
        return ids

    await fill("acme")
    if not db.is_sqlite:
        with db.transaction() as session:
            for table in ("segment_members", "identifiers", "profiles", "events"):
                session.execute(text(f"ANALYZE {table}"))
    ids = (await fill("newcomer"))[:300:7]  # the statistics know acme only
    counted = IdentitySettings(computed_traits=(
        ComputedTrait("views", Aggregation.COUNT, "page_viewed"),))
    windowed = IdentitySettings(computed_traits=(
        ComputedTrait("views", Aggregation.COUNT, "page_viewed", window=timedelta(days=3)),))
    reads: list[tuple[str, Callable[[Session], object]]] = [
        ("segment_members", lambda s: segments.memberships(s, "newcomer", ids)),
        ("segment_members", lambda s: segments.profile_states(s, "newcomer", ids)),
        ("events", lambda s: segments.computed_values(s, "newcomer", ids, counted, START)),
        ("events", lambda s: segments.computed_values(s, "newcomer", ids, windowed, START))]
    filtered = []
    for table, read in reads:
        for statement, plan in plans(db, read, f" {table} "):
            # The union's three branches: each by profile.
            wanted = 3 if "UNION ALL" in statement else 1
            probed = ([line for line in plan.splitlines() if "profile_id=?" in line]
                      if db.is_sqlite else
                      [line for line in plan.splitlines() if "Index Cond" in line
                       and re.search(r"\bprofile_id\b", line)])
            if len(probed) < wanted:
                filtered.append(f"{statement}\n{plan}")
    assert not filtered, "\n\n".join(filtered)

    # What the probes find is what the keys name.
    with db.transaction() as session:
        assert segments.memberships(session, "newcomer", ids[:2]) == {
            ids[0]: {"seg0"}, ids[1]: {"seg1"}}
        states = segments.profile_states(session, "newcomer", [ids[1], "nobody"])
        assert list(states) == [ids[1]]
        assert states[ids[1]][1] == ["seg1"] and len(states[ids[1]][2]) == 1
        values, _ = segments.computed_values(session, "newcomer", ids[:1], counted, START)
        assert values == {ids[0]: {"views": 1}}
