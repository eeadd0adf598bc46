"""Publishable (ingest-only) keys, which anyone can read from a web page or an app: the key sets
the events' source, a claim to be a known person needs the brand backend's HMAC when the
workspace requires identity verification, and address traits and consent need it always.
Through the real gRPC server with real keys, on both backends."""

from __future__ import annotations

import grpc
from grpc_status import rpc_status
from identity_support import Identity, rpc_error

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
SECRET = "s" * 40


def identifier(kind: str, value: str, proof: str = "") -> event_pb2.Identifier:
    return event_pb2.Identifier(type=kind, value=value, verification_hash=proof)


def sent(message_id: str, *identifiers: event_pb2.Identifier, name: str = "",
         source: str = "web", **traits: str) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=message_id, name=name, source=source, identifiers=identifiers,
        type=event_pb2.EVENT_TYPE_TRACK if name else event_pb2.EVENT_TYPE_IDENTIFY,
        traits=dict_to_struct(traits),
        properties=dict_to_struct({"channel": "email"} if "subscribed" in name else {}))


async def publishable(identity: Identity, admin: Metadata) -> tuple[Metadata, str]:
    key = (await identity.workspaces.CreateApiKey(ws_pb.CreateApiKeyRequest(
        display_name="web", scope=workspace_pb2.API_KEY_SCOPE_INGEST), metadata=admin)).api_key
    return bearer(key.secret), key.key_id


async def ingest(identity: Identity, metadata: Metadata, *events: event_pb2.Event
                 ) -> list[pb.IngestEventResult]:
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=events),
                                               metadata=metadata)
    return list(reply.results)


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
    # The key names the source, whatever the page claimed.
    assert await sources(identity, admin, results[0].profile_id) == [
        f"publishable-key:{key_id}"]
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
        name=f"profiles/{results[2].profile_id}"), metadata=admin)).profile
    assert profile.traits["email"] == "ada@example.com"
    assert sorted((i.type, i.value) for i in profile.identifiers) == [
        ("email", "ada@example.com"), ("user_id", "ada")]
    # The verified unsubscribe was recorded.
    assert [c.channel for c in profile.consents
            if c.state == consent_pb2.CONSENT_STATE_UNSUBSCRIBED] == [common_pb2.CHANNEL_EMAIL]
