"""Identity resolution over a real gRPC server, on both backends: merges, limits and blocked
values set through UpdateIdentitySettings, normalisation, order independence (a property-based
test) and consent checks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import grpc
import sqlalchemy
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from identity_support import START, Identity, event, rpc_error

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2, event_pb2, identity_settings_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters import profiles
from cjo_platform.rpc.status import field_violations

Metadata = tuple[tuple[str, str], ...]
_workspaces = itertools.count()


def lookup(kind: str, value: str) -> pb.LookupProfileRequest:
    return pb.LookupProfileRequest(identifier=event_pb2.Identifier(type=kind, value=value))


def type_rule(kind: str, limit: int = 0, *blocked: str) -> identity_settings_pb2.IdentifierTypeRule:
    return identity_settings_pb2.IdentifierTypeRule(type=kind, limit=limit, blocked_values=blocked)


async def ingest(identity: Identity, metadata: Metadata,
                 *events: event_pb2.Event) -> pb.IngestEventsResponse:
    return await identity.events.IngestEvents(pb.IngestEventsRequest(events=events),
                                              metadata=metadata)


async def test_settings_are_validated_and_applied_to_normalisation(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    defaults = (await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                           metadata=acme)).settings
    assert [(r.type, r.limit) for r in defaults.identifier_types] == [("user_id", 1)]
    sms = [d.opt_in for d in defaults.consent_defaults if d.channel == common_pb2.CHANNEL_SMS]
    assert sms == [True]

    bad = await rpc_error(identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(
            default_phone_region="Atlantis",
            identifier_types=[type_rule("email", 0, "test@(example")])), metadata=acme))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(rpc_status.from_call(bad))) == {
        "settings.default_phone_region", "settings.identifier_types[0].blocked_values[0]"}

    # Before: no default region, no loyalty cards.
    before = await ingest(identity, acme, event("m1", ("phone", "06 12 34 56 78")),
                          event("m2", ("loyalty_card", "L-1")))
    assert field_violations(before.results[0].status) == {
        "events[0].identifiers[0].value": "is not a phone number; write it with a country code "
                                          "(+...)"}
    assert "events[1].identifiers[0].type" in field_violations(before.results[1].status)

    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(
            default_phone_region="fr", identifier_types=[type_rule("loyalty_card", 1)])),
        metadata=acme)
    after = await ingest(identity, acme,
                         event("m1", ("phone", "06 12 34 56 78"), ("loyalty_card", " L-1 ")),
                         event("m3", ("phone", "not a number")))
    assert after.results[0].status.code == 0
    assert "events[1].identifiers[0].value" in field_violations(after.results[1].status)
    found = await identity.events.LookupProfile(lookup("phone", "+33 6 12 34 56 78"),
                                                metadata=acme)
    assert sorted((i.type, i.value) for i in found.profile.identifiers) == [
        ("loyalty_card", "L-1"), ("phone", "+33612345678")]
    stored = (await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                         metadata=acme)).settings
    assert stored.default_phone_region == "FR" and stored.HasField("update_time")


async def test_limits_and_blocked_values_keep_people_apart(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(identifier_types=[
            type_rule("user_id", 1), type_rule("email", 0, r"test@example\.com", "null")])),
        metadata=acme)
    first = await ingest(identity, acme,
                         event("m1", ("user_id", "u1"), ("anonymous_id", "shared-pc"), at=START),
                         event("m2", ("user_id", "u1"), ("email", "test@example.com"), at=START))
    # Another person logs in on the same computer and uses the same placeholder email.
    second = await ingest(identity, acme, event(
        "m3", ("user_id", "u2"), ("anonymous_id", "shared-pc"), ("email", "TEST@example.com"),
        at=START + timedelta(minutes=1)))
    u1, u2 = first.results[0].profile_id, second.results[0].profile_id
    assert u1 != u2
    shared = await identity.events.LookupProfile(lookup("anonymous_id", "shared-pc"),
                                                 metadata=acme)
    assert shared.profile.profile_id == u1  # it was u1's first
    missing = await rpc_error(identity.events.LookupProfile(lookup("email", "test@example.com"),
                                                            metadata=acme))
    assert missing.code() == grpc.StatusCode.NOT_FOUND  # a blocked value is never linked

    only_blocked = await ingest(identity, acme, event("m4", ("email", "null")))
    assert field_violations(only_blocked.results[0].status) == {
        "events[0].identifiers": "every identifier is blocked or erased; nothing to resolve "
                                 "the event to"}


async def test_a_late_event_is_placed_by_its_event_time(identity: Identity) -> None:
    """u2 used the shared tablet BEFORE u1 (but that event arrives last): the tablet's history
    moves to u2, as if the events had arrived in order."""
    acme = await identity.new_workspace("acme")
    tablet = ("device_id", "tablet")
    # Received after all of them (a time ahead of the receive time would be corrected).
    identity.clock.set(START + timedelta(hours=2))
    await ingest(identity, acme,
                 event("m1", ("user_id", "u1"), tablet, traits={"plan": "pro"}, identify=True,
                       at=START + timedelta(hours=1)),
                 event("m2", tablet, name="page_viewed", at=START + timedelta(hours=2)))
    late = await ingest(identity, acme, event(
        "m0", ("user_id", "u2"), tablet, traits={"city": "Oslo"}, identify=True, at=START))
    owner = await identity.events.LookupProfile(lookup(*tablet), metadata=acme)
    assert owner.profile.profile_id == late.results[0].profile_id
    u1 = (await identity.events.LookupProfile(lookup("user_id", "u1"), metadata=acme)).profile
    assert u1.profile_id != owner.profile.profile_id
    assert [(i.type, i.value) for i in u1.identifiers] == [("user_id", "u1")]
    assert dict(u1.traits) == {"plan": "pro"}  # m1 still carries u1, its strongest identifier
    events = await identity.events.ListProfileEvents(
        pb.ListProfileEventsRequest(parent=owner.profile.name), metadata=acme)
    assert [e.event.message_id for e in events.events] == ["m2", "m0"]


# --- Order independence ------------------------------------------------------------------

_IDENTIFIERS = [("user_id", "u1"), ("user_id", "u2"), ("email", "a@x.io"), ("email", "b@x.io"),
                ("email", "null"), ("anonymous_id", "a1"), ("anonymous_id", "a2"),
                ("device_id", "d1")]
_event_specs = st.lists(
    st.tuples(st.lists(st.sampled_from(_IDENTIFIERS), min_size=1, max_size=3, unique=True),
              st.integers(0, 4),  # minute: ties are frequent on purpose
              st.sampled_from(["free", "pro", "team"]),
              st.sampled_from(["web", "crm"]),
              st.lists(st.sampled_from(["ski", "golf", "chess"]), max_size=2)),
    min_size=1, max_size=8)


def _events(specs: Sequence[tuple[Any, ...]]) -> list[event_pb2.Event]:
    built = []
    for n, (identifiers, minute, plan, source, interests) in enumerate(specs):
        item = event(f"m{n}", *identifiers, identify=True, at=START + timedelta(minutes=minute),
                     traits={"plan": plan, "tier": plan, "interests": interests,
                             "first_plan": plan})
        item.source = source
        if all(i == ("email", "null") for i in identifiers):
            item.identifiers.append(event_pb2.Identifier(type="device_id", value=f"own-{n}"))
        built.append(item)
    return built


async def _partition(identity: Identity, metadata: Metadata, workspace: str,
                     events: Sequence[event_pb2.Event], chunk: int
                     ) -> set[tuple[frozenset[tuple[str, str]], str]]:
    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(
            identifier_types=[type_rule("user_id", 1), type_rule("email", 1, "null")],
            trait_rules=[
                identity_settings_pb2.TraitRule(
                    trait="tier", survivorship=identity_settings_pb2.SURVIVORSHIP_SOURCE_PRIORITY,
                    source_priority=["crm"]),
                identity_settings_pb2.TraitRule(
                    trait="interests", survivorship=identity_settings_pb2.SURVIVORSHIP_UNION),
                identity_settings_pb2.TraitRule(
                    trait="first_plan", survivorship=identity_settings_pb2.SURVIVORSHIP_FIRST),
            ])), metadata=metadata)
    for start in range(0, len(events), chunk):
        reply = await ingest(identity, metadata, *events[start:start + chunk])
        assert {r.status.code for r in reply.results} == {0}

    def read() -> set[tuple[frozenset[tuple[str, str]], str]]:
        with identity.app.db.transaction() as session:
            groups = profiles.partition_of(session, workspace)
            records = profiles.golden_of(session, workspace, groups)
        assert set(records) == set(groups)  # every owner exists; merged-away rows are gone
        return {(frozenset((i.type, i.value) for i in items),
                 repr(sorted((n, t.value, t.source, t.time) for n, t in
                             records[p].traits.items())))
                for p, items in groups.items()}

    return await identity.app.db.run(read)


# Derandomized: the same 20 examples on every run, so CI cannot fail on a draw nobody saw.
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=_event_specs, data=st.data())
async def test_any_arrival_order_gives_the_same_profiles(identity: Identity, specs: Any,
                                                         data: st.DataObject) -> None:
    events = _events(specs)
    shuffled = data.draw(st.permutations(events))
    chunk = data.draw(st.integers(1, 4))
    results = []
    for order, size in ((events, 1), (shuffled, chunk)):
        workspace = f"order-{next(_workspaces)}"
        metadata = await identity.new_workspace(workspace)
        results.append(await _partition(identity, metadata, workspace, order, size))
    assert results[0] == results[1]


# --- Consent -----------------------------------------------------------------------------

def consent_event(message_id: str, name: str, channel: str, topic: str = "",
                  minutes: int = 0, *identifiers: tuple[str, str]) -> event_pb2.Event:
    item = event(message_id, *(identifiers or (("user_id", "u1"),)), name=name,
                 at=START + timedelta(minutes=minutes))
    item.properties.update({"channel": channel, "topic": topic})
    item.source = "unsubscribe_link"
    return item


async def test_consent_answers_delivery_per_query(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    anon = await ingest(identity, acme, consent_event("c0", "subscribed", "sms", "", 0,
                                                      ("anonymous_id", "a1")))
    reply = await ingest(identity, acme,
                         consent_event("c1", "unsubscribed", "email", "promo", 1),
                         consent_event("c2", "subscribed", "email", "promo", 0),  # older
                         consent_event("c3", "unsubscribed", "fax", "", 2))
    assert "events[2].properties.channel" in field_violations(reply.results[2].status)
    profile_id = reply.results[0].profile_id
    merged = anon.results[0].profile_id
    await ingest(identity, acme, event("c4", ("user_id", "u1"), ("anonymous_id", "a1"),
                                       at=START + timedelta(minutes=3)))

    def query(profile: str, channel: int, topic: str = "") -> consent_pb2.ConsentQuery:
        return consent_pb2.ConsentQuery(profile_id=profile, channel=channel, topic=topic)

    answers = await identity.events.BatchCheckConsent(pb.BatchCheckConsentRequest(queries=[
        query(profile_id, common_pb2.CHANNEL_EMAIL, "promo"),
        query(profile_id, common_pb2.CHANNEL_EMAIL, "news"),
        query(merged, common_pb2.CHANNEL_SMS),  # said before the merge, on the anonymous id
        query(profile_id, common_pb2.CHANNEL_PUSH),
        query("nobody", common_pb2.CHANNEL_EMAIL),
        query(profile_id, common_pb2.CHANNEL_UNSPECIFIED),
    ]), metadata=acme)
    got = [(r.decision.state, r.decision.allowed) for r in answers.results[:5]]
    assert got == [(consent_pb2.CONSENT_STATE_UNSUBSCRIBED, False),
                   (consent_pb2.CONSENT_STATE_UNKNOWN, True),
                   (consent_pb2.CONSENT_STATE_SUBSCRIBED, True),
                   (consent_pb2.CONSENT_STATE_UNKNOWN, True),
                   (consent_pb2.CONSENT_STATE_UNKNOWN, False)]
    assert answers.results[0].decision.reason == "unsubscribed via unsubscribe_link"
    assert field_violations(answers.results[5].status) == {"queries[5].channel": "is required"}

    # Opt-in for push: an unknown answer now forbids the send.
    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(consent_defaults=[
            identity_settings_pb2.ChannelConsentDefault(channel=common_pb2.CHANNEL_PUSH,
                                                        opt_in=True)])), metadata=acme)
    push = await identity.events.BatchCheckConsent(pb.BatchCheckConsentRequest(
        queries=[query(profile_id, common_pb2.CHANNEL_PUSH)]), metadata=acme)
    assert (push.results[0].decision.allowed, push.results[0].decision.reason) == (
        False, "opt-in channel; no consent")
    profile = (await identity.events.GetProfile(
        pb.GetProfileRequest(name=f"profiles/{profile_id}"), metadata=acme)).profile
    assert [(c.channel, c.topic, c.state) for c in profile.consents] == [
        (common_pb2.CHANNEL_EMAIL, "promo", consent_pb2.CONSENT_STATE_UNSUBSCRIBED),
        (common_pb2.CHANNEL_SMS, "", consent_pb2.CONSENT_STATE_SUBSCRIBED)]


async def test_an_unsubscribe_reported_by_email_address_reaches_the_profile(
        identity: Identity) -> None:
    """Delivery reports an unsubscribe by the address it sent to; the profile knew that address
    only as a trait."""
    acme = await identity.new_workspace("acme")
    signed_up = await ingest(identity, acme, event(
        "m1", ("user_id", "u1"), traits={"email": " Ada@Example.com", "phone": "not a phone"},
        identify=True))
    assert signed_up.results[0].status.code == 0  # a bad phone trait is only a trait
    profile_id = signed_up.results[0].profile_id
    unsubscribe = consent_event("d1", "unsubscribed", "email", "", 5,
                                ("email", "ada@example.com"))
    reply = await ingest(identity, acme, unsubscribe)
    assert reply.results[0].profile_id == profile_id
    answer = await identity.events.BatchCheckConsent(pb.BatchCheckConsentRequest(queries=[
        consent_pb2.ConsentQuery(profile_id=profile_id, channel=common_pb2.CHANNEL_EMAIL)]),
        metadata=acme)
    assert not answer.results[0].decision.allowed


async def test_a_consent_check_reads_the_consents_and_not_the_traits(
        identity: Identity) -> None:
    """Delivery asks before every send: the check reads each profile's consents alone, not its
    traits and their times, which it has no use for (decoded per profile, they were most of the
    check's CPU: 13 -> 7 us a profile of 2 traits, 38 -> 10 us of 22 in process)."""
    acme = await identity.new_workspace("acme")
    signed_up = await ingest(identity, acme, event(
        "m1", ("user_id", "u1"), traits={f"t{i}": f"value {i}" for i in range(20)},
        identify=True))
    profile_id = signed_up.results[0].profile_id
    await ingest(identity, acme, consent_event("c1", "unsubscribed", "email", "promo", 1))
    statements: list[str] = []

    @sqlalchemy.event.listens_for(identity.app.db.engine, "before_cursor_execute")
    def executed(conn: object, cursor: object, statement: str, *rest: object) -> None:
        statements.append(statement.lower())

    try:
        answers = await identity.events.BatchCheckConsent(pb.BatchCheckConsentRequest(queries=[
            consent_pb2.ConsentQuery(profile_id=profile_id, channel=common_pb2.CHANNEL_EMAIL,
                                     topic=topic) for topic in ("promo", "news")]),
            metadata=acme)
    finally:
        sqlalchemy.event.remove(identity.app.db.engine, "before_cursor_execute", executed)
    assert [(r.decision.state, r.decision.allowed) for r in answers.results] == [
        (consent_pb2.CONSENT_STATE_UNSUBSCRIBED, False), (consent_pb2.CONSENT_STATE_UNKNOWN, True)]
    read = [s for s in statements if "consents" in s]
    assert read and not any("traits" in s or "trait_times" in s for s in read), read


async def test_concurrent_logins_merge_every_anonymous_profile_into_one(
        identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    browsing = await ingest(identity, acme, *(
        event(f"b{i}", ("anonymous_id", f"a{i}"), traits={f"t{i}": i}, identify=True,
              at=START + timedelta(minutes=i)) for i in range(8)))
    logins = await asyncio.gather(*(ingest(identity, acme, event(
        f"l{i}", ("user_id", "u1"), ("anonymous_id", f"a{i}"),
        at=START + timedelta(hours=1, minutes=i))) for i in range(8)))
    assert {r.results[0].status.code for r in logins} == {0}
    profile = (await identity.events.LookupProfile(lookup("user_id", "u1"),
                                                   metadata=acme)).profile
    assert profile.profile_id == browsing.results[0].profile_id  # a0 was seen first
    assert len(profile.identifiers) == 9
    assert dict(profile.traits) == {f"t{i}": i for i in range(8)}  # no lost update
    assert len(profile.merged_from) == 7
