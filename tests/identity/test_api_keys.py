"""API keys over a real identity server, on both backends: listing without secrets, revocation,
rotation with an overlap window, scopes of new keys, and keys from before scopes."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from identity_support import Identity, event, rpc_error
from sqlalchemy import select

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import workspace_pb2
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo_identity.adapters.tables import api_keys, request_log
from cjo_platform.protobuf import from_timestamp
from cjo_platform.rpc.status import error_reason, field_violations
from support import SERVICE_TOKEN, as_service, bearer

Metadata = tuple[tuple[str, str], ...]
ADMIN = workspace_pb2.API_KEY_SCOPE_ADMIN
WRITE = workspace_pb2.API_KEY_SCOPE_WRITE
READ = workspace_pb2.API_KEY_SCOPE_READ
INGEST = workspace_pb2.API_KEY_SCOPE_INGEST


async def _workspace(identity: Identity, workspace_id: str) -> ws_pb.CreateWorkspaceResponse:
    return await identity.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id=workspace_id), metadata=bearer(SERVICE_TOKEN))


async def _key(identity: Identity, admin: Metadata, name: str,
               scope: workspace_pb2.ApiKeyScope.ValueType) -> workspace_pb2.ApiKey:
    created = await identity.workspaces.CreateApiKey(
        ws_pb.CreateApiKeyRequest(display_name=name, scope=scope), metadata=admin)
    return created.api_key


async def _works(identity: Identity, secret: str) -> bool:
    try:
        await identity.workspaces.GetWorkspace(ws_pb.GetWorkspaceRequest(),
                                               metadata=bearer(secret))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
        return False
    return True


async def _list(identity: Identity, metadata: Metadata, page_size: int = 0
                ) -> list[workspace_pb2.ApiKey]:
    found: list[workspace_pb2.ApiKey] = []
    token = ""
    while True:
        page = await identity.workspaces.ListApiKeys(
            ws_pb.ListApiKeysRequest(page_size=page_size, page_token=token), metadata=metadata)
        found.extend(page.api_keys)
        token = page.next_page_token
        if not token:
            return found


async def test_listing_shows_a_workspaces_keys_without_their_secrets(identity: Identity) -> None:
    acme = await _workspace(identity, "acme")
    admin = bearer(acme.api_key.secret)
    ingest = await _key(identity, admin, "web site", INGEST)
    reader = await _key(identity, admin, "dashboards", READ)
    writer = await _key(identity, admin, "checkout", 0)  # unset: ADMIN, as before scopes
    globex = await _workspace(identity, "globex")
    secrets = [acme.api_key.secret, ingest.secret, reader.secret, writer.secret]

    listed = await _list(identity, admin, page_size=2)  # two pages
    assert sorted(k.key_id for k in listed) == sorted(
        [acme.api_key.key_id, ingest.key_id, reader.key_id, writer.key_id])
    by_name = {k.display_name: k for k in listed}
    assert by_name["web site"].scope == INGEST and by_name["dashboards"].scope == READ
    assert by_name["checkout"].scope == ADMIN and by_name["default"].scope == ADMIN
    for key in listed:
        assert key.secret == ""
        assert key.name == f"workspaces/acme/apiKeys/{key.key_id}"
        assert from_timestamp(key.create_time) == identity.clock.now()
        # The hint names the secret a client holds, never enough of it to authenticate.
        full = next(s for s in secrets if s.startswith(f"cjo_{key.key_id}_"))
        assert key.secret_hint == full[:len(f"cjo_{key.key_id}_") + 4] + "…"
        assert not key.HasField("revoke_time") and not key.HasField("previous_secret_expire_time")
    wire = b"".join(k.SerializeToString() for k in listed)
    assert not any(s.encode() in wire for s in secrets)
    assert not any(s[len("cjo_") + 13:].encode()[:16] in wire for s in secrets)

    # A second workspace sees only its own key; the service token lists for the named one.
    theirs = await _list(identity, bearer(globex.api_key.secret))
    assert [k.key_id for k in theirs] == [globex.api_key.key_id]
    for_acme = await _list(identity, as_service("acme"))
    assert {k.key_id for k in for_acme} == {k.key_id for k in listed}

    # Only an ADMIN key manages keys.
    for weaker in (ingest, reader):
        denied = await rpc_error(identity.workspaces.ListApiKeys(
            ws_pb.ListApiKeysRequest(), metadata=bearer(weaker.secret)))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(rpc_status.from_call(denied)) == "SCOPE_REQUIRED"
    bad = await rpc_error(identity.workspaces.ListApiKeys(
        ws_pb.ListApiKeysRequest(page_token="not a token"), metadata=admin))
    assert "page_token" in field_violations(rpc_status.from_call(bad))
    unknown_scope = await rpc_error(identity.workspaces.CreateApiKey(
        ws_pb.CreateApiKeyRequest(scope=99), metadata=admin))  # type: ignore[arg-type]
    assert unknown_scope.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "scope" in field_violations(rpc_status.from_call(unknown_scope))


async def test_a_key_shows_when_it_was_last_used(identity: Identity) -> None:
    acme = await _workspace(identity, "acme")
    admin = bearer(acme.api_key.secret)
    idle = await _key(identity, admin, "idle", READ)
    await identity.events.IngestEvents(pb.IngestEventsRequest(
        events=[event("m1", ("user_id", "u1"))]), metadata=admin)
    listed = {k.key_id: k for k in await _list(identity, admin)}
    assert from_timestamp(listed[acme.api_key.key_id].last_use_time) == identity.clock.now()
    assert not listed[idle.key_id].HasField("last_use_time")


async def test_a_revoked_key_is_refused_and_stays_listed(identity: Identity) -> None:
    acme = await _workspace(identity, "acme")
    admin = bearer(acme.api_key.secret)
    doomed = await _key(identity, admin, "leaked", WRITE)
    assert await _works(identity, doomed.secret)  # verified and cached

    request = ws_pb.RevokeApiKeyRequest(name=doomed.name, request_id="revoke-1")
    revoked = await identity.workspaces.RevokeApiKey(request, metadata=admin)
    assert from_timestamp(revoked.api_key.revoke_time) == identity.clock.now()
    assert not await _works(identity, doomed.secret)  # at once on the replica that revoked it
    assert await _works(identity, acme.api_key.secret)
    assert await identity.workspaces.RevokeApiKey(request, metadata=admin) == revoked
    again = await identity.workspaces.RevokeApiKey(
        ws_pb.RevokeApiKeyRequest(name=doomed.name), metadata=admin)
    assert again.api_key.revoke_time == revoked.api_key.revoke_time

    listed = {k.key_id: k for k in await _list(identity, admin)}
    assert listed[doomed.key_id].revoke_time == revoked.api_key.revoke_time
    resolved = await rpc_error(identity.workspaces.AuthenticateApiKey(
        ws_pb.AuthenticateApiKeyRequest(secret=doomed.secret), metadata=bearer(SERVICE_TOKEN)))
    assert resolved.code() == grpc.StatusCode.UNAUTHENTICATED

    rotate = await rpc_error(identity.workspaces.RotateApiKey(
        ws_pb.RotateApiKeyRequest(name=doomed.name), metadata=admin))
    assert rotate.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(rpc_status.from_call(rotate)) == "API_KEY_REVOKED"

    globex = await _workspace(identity, "globex")
    foreign = await rpc_error(identity.workspaces.RevokeApiKey(
        ws_pb.RevokeApiKeyRequest(name=acme.api_key.name),
        metadata=bearer(globex.api_key.secret)))
    assert foreign.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _works(identity, acme.api_key.secret)
    missing = await rpc_error(identity.workspaces.RevokeApiKey(
        ws_pb.RevokeApiKeyRequest(name="workspaces/acme/apiKeys/000000000000"), metadata=admin))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(rpc_status.from_call(missing)) == "API_KEY_NOT_FOUND"
    malformed = await rpc_error(identity.workspaces.RevokeApiKey(
        ws_pb.RevokeApiKeyRequest(name="apiKeys/x"), metadata=admin))
    assert "name" in field_violations(rpc_status.from_call(malformed))

    # A key may revoke itself; it is refused from the next call on.
    await identity.workspaces.RevokeApiKey(ws_pb.RevokeApiKeyRequest(name=acme.api_key.name),
                                           metadata=admin)
    assert not await _works(identity, acme.api_key.secret)


async def test_a_rotated_secret_works_for_the_overlap_then_stops(identity: Identity) -> None:
    acme = await _workspace(identity, "acme")
    admin = bearer(acme.api_key.secret)
    key = await _key(identity, admin, "checkout", WRITE)
    old = key.secret
    assert await _works(identity, old)  # cached before the rotation

    request = ws_pb.RotateApiKeyRequest(name=key.name, request_id="rotate-1")
    rotated = (await identity.workspaces.RotateApiKey(request, metadata=admin)).api_key
    new = rotated.secret
    assert new.startswith(f"cjo_{key.key_id}_") and new != old
    assert rotated.key_id == key.key_id and rotated.scope == WRITE
    assert rotated.secret_hint == new[:len(f"cjo_{key.key_id}_") + 4] + "…"
    expiry = identity.clock.now() + timedelta(hours=24)  # the default overlap
    assert from_timestamp(rotated.previous_secret_expire_time) == expiry
    # A repeat is the first answer without the secret, and rotates nothing further.
    repeat = (await identity.workspaces.RotateApiKey(request, metadata=admin)).api_key
    assert repeat.secret == "" and repeat.secret_hint == rotated.secret_hint

    assert await _works(identity, new) and await _works(identity, old)
    told = await identity.workspaces.AuthenticateApiKey(
        ws_pb.AuthenticateApiKeyRequest(secret=old), metadata=bearer(SERVICE_TOKEN))
    assert from_timestamp(told.expire_time) == expiry and told.scope == WRITE
    current = await identity.workspaces.AuthenticateApiKey(
        ws_pb.AuthenticateApiKeyRequest(secret=new), metadata=bearer(SERVICE_TOKEN))
    assert not current.HasField("expire_time")

    identity.clock.advance(timedelta(hours=23, minutes=59))
    assert await _works(identity, old)
    identity.clock.advance(timedelta(minutes=1))
    assert not await _works(identity, old)  # although this replica had it cached
    assert await _works(identity, new)

    # Rotating again while an old secret is in its window drops that one at once; an overlap
    # of zero ends the current one at once.
    second = (await identity.workspaces.RotateApiKey(
        ws_pb.RotateApiKeyRequest(name=key.name), metadata=admin)).api_key.secret
    third = (await identity.workspaces.RotateApiKey(
        ws_pb.RotateApiKeyRequest(name=key.name), metadata=admin)).api_key.secret
    assert not await _works(identity, new)
    assert await _works(identity, second) and await _works(identity, third)
    last = (await identity.workspaces.RotateApiKey(ws_pb.RotateApiKeyRequest(
        name=key.name, overlap=duration_pb2.Duration(seconds=0)), metadata=admin)).api_key
    assert not last.HasField("previous_secret_expire_time")
    assert not await _works(identity, third) and await _works(identity, last.secret)

    for seconds in (-1, 31 * 24 * 3600):
        bad = await rpc_error(identity.workspaces.RotateApiKey(ws_pb.RotateApiKeyRequest(
            name=key.name, overlap=duration_pb2.Duration(seconds=seconds)), metadata=admin))
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "overlap" in field_violations(rpc_status.from_call(bad))
    assert await _works(identity, last.secret)

    def stored() -> list[bytes]:
        with identity.app.db.transaction() as session:
            answers = session.execute(select(request_log.c.response)).scalars().all()
            hashes = session.execute(select(api_keys.c.secret_hash,
                                            api_keys.c.previous_secret_hash)).all()
        return [*answers, *(str(h).encode() for h in hashes)]

    kept = await identity.app.db.run(stored)
    assert not any(s.encode() in blob for blob in kept for s in (old, new, second, third))


async def test_scope_errors_name_the_scope_needed(identity: Identity) -> None:
    acme = await _workspace(identity, "acme")
    ingest = await _key(identity, bearer(acme.api_key.secret), "web site", INGEST)
    denied = await rpc_error(identity.events.ListProfiles(pb.ListProfilesRequest(),
                                                         metadata=bearer(ingest.secret)))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_details_pb2.ErrorInfo()
    next(d for d in rpc_status.from_call(denied).details if d.Unpack(info))
    assert info.reason == "SCOPE_REQUIRED" and info.domain == "identity.cjo"
    assert info.metadata["scope"] == "read" and info.metadata["key_scope"] == "ingest"
    accepted = await identity.events.IngestEvents(pb.IngestEventsRequest(
        events=[event("m1", ("anonymous_id", "a1"))]), metadata=bearer(ingest.secret))
    assert accepted.results[0].status.code == 0
