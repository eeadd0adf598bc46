"""Segment memberships across merges: a profile merged away hands its memberships to the
survivor, so orchestration (which moved its enrollments to the survivor on profile_merged)
hears the person leave a segment the combined profile no longer matches, and never hears them
enter one they were already in. And each leaving is announced once when an ingest and a
DeleteSegment remove the same membership at the same moment."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from identity_support import START, Identity, Metadata, Recorder, event
from query_plans import plans
from sqlalchemy import delete

from cjo.identity.v1 import event_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters import segments as segment_store
from cjo_identity.adapters.tables import segment_members
from cjo_identity.service_layer import segments as segment_use_cases
from support import counted_events, eventually

MIN = timedelta(minutes=1)


async def _shop(identity: Identity, condition: str) -> Metadata:
    """A workspace counting carts and orders, with the segment "s" of ``condition``."""
    acme = await identity.new_workspace("acme")
    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=counted_events(carts="cart_added", orders="order_completed")), metadata=acme)
    await identity.events.CreateSegment(pb.CreateSegmentRequest(segment=segment_pb2.Segment(
        segment_id="s", condition=condition)), metadata=acme)
    await identity.backfilled(acme, "s")
    return acme


async def _ingest(identity: Identity, metadata: Metadata, *events: event_pb2.Event) -> str:
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=events),
                                               metadata=metadata)
    assert {r.status.code for r in reply.results} == {0}, reply
    return reply.results[0].profile_id


async def _members(identity: Identity, metadata: Metadata) -> list[str]:
    return list((await identity.events.ListSegmentMembers(pb.ListSegmentMembersRequest(
        parent="segments/s"), metadata=metadata)).profile_ids)


def _heard(recorder: Recorder) -> list[tuple[str, str]]:
    """The lifecycle and segment events orchestration heard, in order: (name, profile id)."""
    return [(e.event.name, e.profile_id) for e in recorder.events
            if e.event.name.startswith(("segment_", "profile_"))]


async def _settled(identity: Identity, recorder: Recorder, metadata: Metadata, user: str,
                   message_id: str) -> list[tuple[str, str]]:
    """What orchestration heard once the user's events so far were forwarded: a page view of
    theirs ingested now (it changes no membership) arrives after them (per-profile order)."""
    await _ingest(identity, metadata, event(message_id, ("user_id", user), at=START))
    await eventually(lambda: any(e.event.message_id == message_id for e in recorder.events))
    return _heard(recorder)


async def _visitor_logs_in(identity: Identity, recorder: Recorder, condition: str
                          ) -> tuple[Metadata, str, str, list[tuple[str, str]]]:
    """A customer orders; an anonymous visitor adds to cart (entering the segment "s" of
    ``condition``); the visitor logs in as the customer (merged into them). Returns the
    workspace, the customer's and the visitor's profile ids, and what orchestration heard."""
    acme = await _shop(identity, condition)
    known = await _ingest(identity, acme, event("m1", ("user_id", "u1"),
                                                name="order_completed", at=START))
    anon = await _ingest(identity, acme, event("m2", ("anonymous_id", "a1"),
                                               name="cart_added", at=START + MIN))
    await eventually(lambda: ("segment_entered", anon) in _heard(recorder))
    await _ingest(identity, acme, event("m3", ("user_id", "u1"), ("anonymous_id", "a1"),
                                        identify=True, at=START + 2 * MIN))
    return acme, known, anon, await _settled(identity, recorder, acme, "u1", "m9")


async def test_a_member_merged_into_a_profile_that_no_longer_matches_leaves(
        identity: Identity, recorder: Recorder) -> None:
    """Abandoned cart: a known customer ordered; an anonymous visitor adds to cart (enters);
    the visitor logs in as the customer (merged into them): the person has ordered, so they
    leave, announced under the survivor's id after the merge that moved their enrollment."""
    acme, known, anon, heard = await _visitor_logs_in(
        identity, recorder, "computed.carts >= 1 && computed.orders == 0")
    assert await _members(identity, acme) == []
    assert heard == [("segment_entered", anon), ("profile_merged", known),
                     ("segment_exited", known)]


async def test_a_member_merged_into_a_profile_that_matches_stays_without_entering_again(
        identity: Identity, recorder: Recorder) -> None:
    """The combined profile matches: the survivor is a member, and no second segment_entered
    (the person was in already, through the merged profile)."""
    acme, known, anon, heard = await _visitor_logs_in(identity, recorder, "computed.carts >= 1")
    assert await _members(identity, acme) == [known]
    assert heard == [("segment_entered", anon), ("profile_merged", known)]


async def test_two_members_merged_in_one_batch_leave_once(
        identity: Identity, recorder: Recorder) -> None:
    """Two visitors in the segment both log in as the customer, who ordered, in one call:
    one batch, two merges. One segment_exited for the survivor, after both merges."""
    acme = await _shop(identity, "computed.carts >= 1 && computed.orders == 0")
    known = await _ingest(identity, acme, event("m1", ("user_id", "u1"),
                                                name="order_completed", at=START))
    one = await _ingest(identity, acme, event("m2", ("anonymous_id", "a1"),
                                              name="cart_added", at=START + MIN))
    two = await _ingest(identity, acme, event("m3", ("anonymous_id", "a2"),
                                              name="cart_added", at=START + MIN))
    await eventually(lambda: sorted(p for name, p in _heard(recorder)
                                    if name == "segment_entered") == sorted([one, two]))
    await _ingest(identity, acme,
                  event("m5", ("user_id", "u1"), ("anonymous_id", "a1"), identify=True,
                        at=START + 3 * MIN),
                  event("m6", ("user_id", "u1"), ("anonymous_id", "a2"), identify=True,
                        at=START + 3 * MIN))
    later = (await _settled(identity, recorder, acme, "u1", "m9"))[2:]
    assert await _members(identity, acme) == []
    assert later == [("profile_merged", known), ("profile_merged", known),
                     ("segment_exited", known)]


async def test_a_leaving_the_delete_segment_drain_announced_is_not_announced_again(
        identity: Identity, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest reads a profile's memberships, then DeleteSegment's drain (which locks no
    profile) removes one and announces the leaving; the ingest finds the profile no longer
    matches: it must not announce it again (simulated on one connection: the row goes between
    the ingest's read and its delete)."""
    acme = await _shop(identity, "computed.carts >= 1 && computed.orders == 0")
    ada = await _ingest(identity, acme, event("m1", ("user_id", "u1"), name="cart_added",
                                              at=START))
    await eventually(lambda: ("segment_entered", ada) in _heard(recorder))
    read = segment_store.memberships

    def drained_meanwhile(session: Any, workspace_id: str, profile_ids: Any) -> Any:
        found = read(session, workspace_id, profile_ids)
        session.execute(delete(segment_members).where(segment_members.c.segment_id == "s"))
        return found

    monkeypatch.setattr(segment_store, "memberships", drained_meanwhile)
    await _ingest(identity, acme, event("m2", ("user_id", "u1"), name="order_completed",
                                        at=START + MIN))
    assert ("segment_exited", ada) not in await _settled(identity, recorder, acme, "u1", "m9")


async def test_delete_segment_announces_only_the_leavings_it_removed(
        identity: Identity, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """DeleteSegment's last pass lists the members, and an ingest removes (and announces)
    one of them before the pass deletes them: that one is not announced twice."""
    acme = await _shop(identity, "computed.carts >= 1")
    people = [await _ingest(identity, acme, event(f"m{n}", ("user_id", f"u{n}"),
                                                  name="cart_added", at=START))
              for n in range(3)]
    await eventually(lambda: len(_heard(recorder)) == 3)

    async def no_drain(*args: Any) -> None:
        return None  # the last pass (delete_segment) meets every member

    listed = segment_store.list_members
    ingested: list[str] = []

    def left_meanwhile(session: Any, *args: Any) -> list[str]:
        found: list[str] = listed(session, *args)
        if found and not ingested:
            ingested.append(found[0])
            session.execute(delete(segment_members).where(
                segment_members.c.profile_id == found[0]))
        return found

    monkeypatch.setattr(segment_use_cases, "drain", no_drain)
    monkeypatch.setattr(segment_store, "list_members", left_meanwhile)
    await identity.events.DeleteSegment(pb.DeleteSegmentRequest(name="segments/s"),
                                        metadata=acme)

    user = f"u{people.index(ingested[0])}"
    await _settled(identity, recorder, acme, user, "m9")  # its exits, if any, came before
    await eventually(lambda: len([n for n, _ in _heard(recorder) if n == "segment_exited"]) >= 2)
    assert sorted(p for name, p in _heard(recorder)
                  if name == "segment_exited") == sorted(set(people) - set(ingested))


async def test_memberships_leaving_together_are_deleted_a_statement_per_segment(
        identity: Identity) -> None:
    """Review rsegmerge HIGH: the leavings of a batch were one DELETE with a row-value IN of up
    to 5,000 (segment, profile) pairs, which PostgreSQL ran as an OR of as many index scans
    (5,000 leavings: 15-22 s, with the profiles' locks held). Now one statement per segment,
    its profile ids matched by the key's index."""
    pairs = [(segment, f"p{i}") for segment in ("s1", "s2") for i in range(3)]
    found = plans(identity.app.db,
                  lambda session: segment_store._remove_pairs(session, "acme", pairs),
                  "segment_members")
    assert len(found) == 2  # one DELETE per segment
    for statement, plan in found:
        assert statement.lstrip().upper().startswith("DELETE")
        assert "BitmapOr" not in plan and "MULTI-INDEX OR" not in plan, plan
