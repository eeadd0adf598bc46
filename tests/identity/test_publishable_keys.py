"""Publishable (ingest-only) keys, which anyone can read from a web page or an app: the key sets
the events' source, a claim to be a known person needs the brand backend's HMAC when the
workspace requires identity verification, and address traits and consent need it always.
Through the real gRPC server with real keys, on both backends."""

from __future__ import annotations

from datetime import UTC, timedelta

import grpc
from grpc_status import rpc_status
from identity_support import SECRET, Identity, identifier, ingest, publishable, rpc_error, sent

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2, event_pb2, workspace_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_settings_pb2 as settings_pb2
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo_identity.domain.verification import verification_hash
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc.status import field_violations
from support import bearer

Metadata = tuple[tuple[str, str], ...]


async def lookup(identity: Identity, admin: Metadata, kind: str, value: str) -> str:
    """The id of the profile that holds the identifier (a publishable key does not learn it)."""
    reply = await identity.events.LookupProfile(pb.LookupProfileRequest(
        identifier=event_pb2.Identifier(type=kind, value=value)), metadata=admin)
    return reply.profile.name.removeprefix("profiles/")


async def sources(identity: Identity, admin: Metadata, profile_id: str) -> list[str]:
    reply = await identity.events.ListProfileEvents(pb.ListProfileEventsRequest(
        parent=f"profiles/{profile_id}", page_size=50), metadata=admin)
    return [e.event.source for e in reply.events]


async def test_a_publishable_key_sets_the_source_and_cannot_change_addresses_or_consent(
        identity: Identity) -> None:
    admin = await identity.new_workspace("acme")
    web, key_id = await publishable(identity, admin)
    results = await ingest(
        identity, web,
        sent("e1", identifier("user_id", "ada"), name="page_viewed", source="crm"),
        sent("e2", identifier("user_id", "ada"), email="mallory@example.com"),
        sent("e3", identifier("user_id", "ada"), name="unsubscribed"),
        event_pb2.Event(message_id="e4", type=event_pb2.EVENT_TYPE_TRACK, name="x",
                        profile_id="p1"))
    assert [r.status.code for r in results] == [0, 3, 3, 3]
    assert "events[1].traits.email" in field_violations(results[1].status)
    assert "events[2].name" in field_violations(results[2].status)
    assert "events[3].profile_id" in field_violations(results[3].status)
    # The key names the source, whatever the page claimed; it does not learn the profile.
    assert results[0].event_id and not results[0].profile_id
    ada = await lookup(identity, admin, "user_id", "ada")
    assert await sources(identity, admin, ada) == [f"publishable-key:{key_id}"]
    # A server-side key is trusted as before.
    [server] = await ingest(identity, admin, sent("e5", identifier("user_id", "ada"),
                                                  source="crm", email="ada@example.com"))
    assert server.status.code == 0
    assert sorted(await sources(identity, admin, server.profile_id)) == [
        "crm", f"publishable-key:{key_id}"]


async def test_required_verification_accepts_only_identifiers_the_backend_signed(
        identity: Identity) -> None:
    admin = await identity.new_workspace("acme")
    web, _ = await publishable(identity, admin)
    refused = await rpc_error(identity.events.UpdateIdentitySettings(
        pb.UpdateIdentitySettingsRequest(settings=settings_pb2.IdentitySettings(
            identity_verification=settings_pb2.IdentityVerification(required=True))),
        metadata=admin))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "settings.identity_verification.secret" in field_violations(
        rpc_status.from_call(refused))
    saved = await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=settings_pb2.IdentitySettings(identity_verification=settings_pb2.
                                               IdentityVerification(secret=SECRET))),
        metadata=admin)
    assert saved.settings.identity_verification.secret_set
    # Read, modify, write: the secret is never returned, and an empty one keeps it.
    current = (await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                         metadata=admin)).settings
    assert not current.identity_verification.secret
    current.identity_verification.required = True
    current.ClearField("computed_traits_backfill")
    await identity.events.UpdateIdentitySettings(
        pb.UpdateIdentitySettingsRequest(settings=current), metadata=admin)

    ada = verification_hash(SECRET, "ada")
    email = verification_hash(SECRET, "ada@example.com")
    results = await ingest(
        identity, web,
        sent("e1", identifier("user_id", "ada")),
        sent("e2", identifier("user_id", "ada", verification_hash("wrong" * 8, "ada"))),
        sent("e3", identifier("user_id", "ada", ada), name="page_viewed"),
        # Anonymous visitors need no proof.
        sent("e4", identifier("anonymous_id", "cookie-1"), name="page_viewed"),
        # An address trait needs the proof of that very address.
        sent("e5", identifier("user_id", "ada", ada), email="mallory@example.com"),
        sent("e6", identifier("user_id", "ada", ada),
             identifier("email", "Ada@Example.com", email), email="ada@example.com"),
        sent("e7", identifier("user_id", "ada", ada), name="unsubscribed"))
    assert [r.status.code for r in results] == [3, 3, 0, 0, 3, 0, 0]
    assert "events[0].identifiers[0].verification_hash" in field_violations(results[0].status)
    assert "events[1].identifiers[0].verification_hash" in field_violations(results[1].status)
    assert "events[4].traits.email" in field_violations(results[4].status)
    profile = (await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{await lookup(identity, admin, 'user_id', 'ada')}"),
        metadata=admin)).profile
    assert profile.traits["email"] == "ada@example.com"
    assert sorted((i.type, i.value) for i in profile.identifiers) == [
        ("email", "ada@example.com"), ("user_id", "ada")]
    # The verified unsubscribe was recorded.
    assert [c.channel for c in profile.consents
            if c.state == consent_pb2.CONSENT_STATE_UNSUBSCRIBED] == [common_pb2.CHANNEL_EMAIL]


async def consent_allowed(identity: Identity, admin: Metadata, profile_id: str) -> bool:
    reply = await identity.events.BatchCheckConsent(pb.BatchCheckConsentRequest(queries=[
        consent_pb2.ConsentQuery(profile_id=profile_id, channel=common_pb2.CHANNEL_EMAIL)]),
        metadata=admin)
    [result] = reply.results
    assert result.status.code == 0
    return result.decision.allowed


def unsubscribe_by_delivery(message_id: str, profile_id: str) -> event_pb2.Event:
    """What delivery reports for a one-click unsubscribe: at its receive time, on the profile."""
    return event_pb2.Event(message_id=message_id, type=event_pb2.EVENT_TYPE_TRACK,
                           name="unsubscribed", profile_id=profile_id, source="cjo-delivery",
                           properties=dict_to_struct({"channel": "email"}))


async def test_an_event_dated_in_the_future_does_not_beat_a_later_unsubscribe(
        identity: Identity) -> None:
    admin = await identity.new_workspace("acme")
    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=settings_pb2.IdentitySettings(identity_verification=settings_pb2.
                                               IdentityVerification(secret=SECRET))),
        metadata=admin)
    web, _ = await publishable(identity, admin)
    write = bearer((await identity.workspaces.CreateApiKey(ws_pb.CreateApiKeyRequest(
        display_name="backend", scope=workspace_pb2.API_KEY_SCOPE_WRITE),
        metadata=admin)).api_key.secret)
    year_ahead = identity.clock.now() + timedelta(days=365)
    for index, (metadata, person) in enumerate([(web, "ada"), (write, "bob")]):
        [known] = await ingest(identity, admin, sent(f"known-{index}",
                                                     identifier("user_id", person)))
        subscribe = sent(f"sub-{index}", identifier("user_id", person,
                                                    verification_hash(SECRET, person)),
                         name="subscribed")
        subscribe.timestamp.FromDatetime(year_ahead)
        [result] = await ingest(identity, metadata, subscribe)
        assert result.status.code == 0
        assert await consent_allowed(identity, admin, known.profile_id)
        identity.clock.advance(timedelta(seconds=1))
        [unsubscribed] = await ingest(identity, admin, unsubscribe_by_delivery(
            f"unsub-{index}", known.profile_id))
        assert unsubscribed.status.code == 0
        # The subscribe counts as received: the person's later unsubscribe wins.
        assert not await consent_allowed(identity, admin, known.profile_id), person


async def test_a_server_key_keeps_a_time_within_the_skew_and_a_publishable_key_none(
        identity: Identity) -> None:
    admin = await identity.new_workspace("acme")
    web, _ = await publishable(identity, admin)
    now = identity.clock.now()
    late, early = sent("ahead", identifier("user_id", "ada"), name="page_viewed"), \
        sent("web", identifier("user_id", "ada"), name="page_viewed")
    late.timestamp.FromDatetime(now + timedelta(seconds=60))
    early.timestamp.FromDatetime(now - timedelta(days=1))
    [known] = await ingest(identity, admin, late)
    await ingest(identity, web, early)
    reply = await identity.events.ListProfileEvents(pb.ListProfileEventsRequest(
        parent=f"profiles/{known.profile_id}", page_size=10), metadata=admin)
    times = {e.event.message_id: e.event.timestamp.ToDatetime(tzinfo=UTC)
             for e in reply.events}
    # Within CJO_IDENTITY_MAX_CLOCK_SKEW_SECONDS (300 s) a backend's time stands; a
    # publishable key's is the receive time, past or future.
    assert times == {"ahead": now + timedelta(seconds=60), "web": now}


async def test_a_corrected_time_keeps_the_time_sent_as_original_timestamp(
        identity: Identity) -> None:
    """The event's time is the receive time, the sender's is kept beside it (Segment's
    originalTimestamp); an event whose time stands, or was sent without one, has none."""
    admin = await identity.new_workspace("acme")
    web, _ = await publishable(identity, admin)
    now = identity.clock.now()
    events = {name: sent(name, identifier("user_id", "ada"), name="page_viewed")
              for name in ("future", "within", "web_past", "web_none", "none")}
    sent_times = {"future": now + timedelta(days=365), "within": now + timedelta(seconds=60),
                  "web_past": now - timedelta(days=1)}
    for name, at in sent_times.items():
        events[name].timestamp.FromDatetime(at)
    [known, *_] = await ingest(identity, admin, events["future"], events["within"],
                               events["none"])
    await ingest(identity, web, events["web_past"], events["web_none"])
    reply = await identity.events.ListProfileEvents(pb.ListProfileEventsRequest(
        parent=f"profiles/{known.profile_id}", page_size=10), metadata=admin)
    got = {e.event.message_id: (
        e.event.timestamp.ToDatetime(tzinfo=UTC),
        e.original_timestamp.ToDatetime(tzinfo=UTC) if e.HasField("original_timestamp")
        else None) for e in reply.events}
    assert got == {
        "future": (now, sent_times["future"]),
        "within": (sent_times["within"], None),
        "web_past": (now, sent_times["web_past"]),
        "web_none": (now, None),
        "none": (now, None),
    }


async def test_a_publishable_key_cannot_forge_engagement_or_learn_profile_ids(
        identity: Identity) -> None:
    admin = await identity.new_workspace("acme")
    web, _ = await publishable(identity, admin)
    results = await ingest(
        identity, web,
        sent("e1", identifier("anonymous_id", "cookie-1"), name="page_viewed"),
        *(sent(f"forged-{name}", identifier("anonymous_id", "cookie-1"), name=name)
          for name in ("email_opened", "link_clicked", "push_opened", "sms_delivered")))
    assert [r.status.code for r in results] == [0, 3, 3, 3, 3]
    for index, result in enumerate(results[1:], start=1):
        assert f"events[{index}].name" in field_violations(result.status)
    assert results[0].event_id and not results[0].profile_id
    [again] = await ingest(identity, web, sent("e1", identifier("anonymous_id", "cookie-1"),
                                               name="page_viewed"))
    assert again.duplicate and not again.profile_id
    # A server-side key still sends them (an app reporting its own push opens) and learns ids.
    [server] = await ingest(identity, admin, sent("e2", identifier("anonymous_id", "cookie-1"),
                                                  name="push_opened"))
    assert server.status.code == 0 and server.profile_id
