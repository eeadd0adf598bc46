"""Identity's retention: events are kept forever unless CJO_IDENTITY_RETENTION_EVENTS_DAYS says
otherwise (computed traits, segments and backfills read old events), and even then the events a
golden record is folded from (traits, consent) stay: a split refolds records from them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from identity_support import START, Identity, event, ingest
from query_plans import plans
from retention_support import NOW, filled, service_db
from sqlalchemy import text

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2, event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters.profiles import stored_refs
from cjo_identity.adapters.retention import RULES
from cjo_identity.adapters.tables import events
from cjo_identity.domain.events import SUBSCRIBED, UNSUBSCRIBED
from cjo_identity.domain.golden import fold
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.db.retention import remove_batch
from support import Backend


async def test_events_are_kept_forever_unless_a_limit_is_set(backend: Backend) -> None:
    with service_db("identity", backend) as db:
        db.insert(events, [
            {"workspace_id": w, "event_id": f"e{age}", "message_id": f"m{age}", "profile_id": "p",
             "type": "track", "identifiers": [], "properties": {}, "traits": {},
             "timestamp": NOW - timedelta(days=age), "receive_time": NOW - timedelta(days=age)}
            for w in ("w1", "w2") for age in (1, 399, 401, 3000)])
        assert await db.retain(RULES) == {"request_log": 0}
        assert len(db.rows(events, events.c.event_id)) == 8
        assert await db.retain(RULES, events=400) == {"request_log": 0, "events": 4}
        assert db.rows(events, events.c.workspace_id, events.c.event_id) == [
            ("w1", "e1"), ("w1", "e399"), ("w2", "e1"), ("w2", "e399")]


async def test_a_split_after_retention_keeps_the_traits_and_the_unsubscribe(
        identity: Identity, backend: Backend) -> None:
    """A person's identify (traits) and unsubscribe are older than the limit; then a late event
    gives their anonymous id to someone else: the split refolds the person's record from their
    stored events, and retention must have left the ones it is folded from."""
    acme = await identity.new_workspace("acme")
    unsubscribe = event("m2", ("user_id", "u2"), name=UNSUBSCRIBED,
                        at=START + timedelta(minutes=1))
    unsubscribe.properties.update({"channel": "email"})
    first = await ingest(identity, acme,
                         event("m1", ("user_id", "u2"), ("anonymous_id", "a1"), identify=True,
                               traits={"plan": "gold", "email": "u2@x.io"}, at=START),
                         unsubscribe,
                         event("m3", ("user_id", "u2"), at=START + timedelta(minutes=2)))
    assert [r.status.code for r in first] == [0, 0, 0]
    identity.clock.advance(timedelta(days=40))
    with service_db("identity", backend) as db:
        db.clock.advance(identity.clock.now() - db.clock.now())
        removed = await db.retain(RULES, events=30)
        left = db.rows(events, events.c.message_id)
    # Sent while offline, dated before m1: a1 was u1's first, so it leaves u2's profile.
    late = await ingest(identity, acme, event("m4", ("user_id", "u1"), ("anonymous_id", "a1"),
                                              identify=True, traits={"city": "Paris"},
                                              at=START - timedelta(days=1)))
    assert late[0].status.code == 0

    async def profile(user_id: str) -> Any:
        return (await identity.events.LookupProfile(pb.LookupProfileRequest(
            identifier=event_pb2.Identifier(type="user_id", value=user_id)),
            metadata=acme)).profile

    u2, u1 = await profile("u2"), await profile("u1")
    assert u2.profile_id != u1.profile_id
    assert dict(u2.traits) == {"plan": "gold", "email": "u2@x.io"}
    assert [(c.channel, c.state) for c in u2.consents] == [
        (common_pb2.CHANNEL_EMAIL, consent_pb2.CONSENT_STATE_UNSUBSCRIBED)]
    assert dict(u1.traits) == {"city": "Paris"}
    answer = await identity.events.BatchCheckConsent(pb.BatchCheckConsentRequest(queries=[
        consent_pb2.ConsentQuery(profile_id=u2.profile_id, channel=common_pb2.CHANNEL_EMAIL)]),
        metadata=acme)
    assert not answer.results[0].decision.allowed
    # Only the page view went: it carries no traits and no consent.
    assert (removed, left) == ({"request_log": 0, "events": 1}, [("m1",), ("m2",)])

    # The dedupe window: a kept event's message id answers its first outcome; the deleted
    # page view's is accepted anew.
    again = await ingest(identity, acme, event("m1", ("user_id", "u2"), identify=True,
                                               traits={"plan": "gold"}, at=START),
                         event("m3", ("user_id", "u2"), at=START + timedelta(minutes=2)))
    assert (again[0].duplicate, again[0].event_id) == (True, first[0].event_id)
    assert not again[1].duplicate and again[1].event_id != first[2].event_id


KEPT = 1500  # enough that a planner prefers an index to a scan where one applies


async def test_retention_deletes_only_events_no_record_is_folded_from_through_its_index(
        backend: Backend) -> None:
    """The events a record is folded from stay, whatever their age and however many: a refold
    of what is left gives the same record, and a batch's query reads the index of removable
    events (the kept ones, all older than the cut-off, are never walked)."""
    old = NOW - timedelta(days=100)

    def row(n: int, kind: str, name: str, traits: dict[str, Any],
            properties: dict[str, Any] | None = None) -> dict[str, Any]:
        return filled(events, {
            "workspace_id": "w", "event_id": f"e{n}", "message_id": f"m{n}", "profile_id": "p",
            "type": kind, "name": name, "identifiers": [["user_id", "u"]],
            "properties": properties or {}, "traits": traits,
            "timestamp": old + timedelta(seconds=n), "receive_time": old + timedelta(seconds=n)})

    kept = [row(n, "identify", "", {"n": n}) for n in range(KEPT)] + [
        row(KEPT, "track", "order_completed", {"vip": None}),
        row(KEPT + 1, "track", SUBSCRIBED, {}, {"channel": "sms"}),
        row(KEPT + 2, "track", UNSUBSCRIBED, {}, {"channel": "email", "topic": "news"})]
    removable = [row(KEPT + 10, "track", "page_viewed", {}, {"path": "/"}),
                 row(KEPT + 11, "identify", "", {}),
                 row(KEPT + 12, "track", "subscribed_to_feed", {}, {"channel": "email"})]
    settings = IdentitySettings()
    with service_db("identity", backend) as db:
        with db.storage.db.transaction() as session:
            session.execute(events.insert(), kept + removable)
            if not db.storage.db.is_sqlite:
                session.execute(text("ANALYZE events"))
            before = fold([r.event for r in stored_refs(session, "w", {"p"})], settings)
        assert before.traits and len(before.consents) == 2

        assert await db.retain(RULES, events=30) == {"request_log": 0, "events": 3}
        with db.storage.db.transaction() as session:
            left = stored_refs(session, "w", {"p"})
        assert sorted(r.event_id for r in left) == sorted(str(r["event_id"]) for r in kept)
        assert fold([r.event for r in left], settings) == before

        # A batch's query, now that only kept events are past the cut-off.
        [(_, plan)] = plans(
            db.storage.db, lambda s: remove_batch(s, RULES[0], NOW, 30, 1000), "events")
        if db.storage.db.is_sqlite:
            assert "USING INDEX ix_events_removable" in plan, plan
        else:
            assert "Index Scan using ix_events_removable" in plan, plan
