from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo_platform.errors import PermissionDenied, Unauthenticated
from cjo_platform.rpc.auth import (
    Authenticator,
    CachingResolver,
    Principal,
    authorize,
    hash_secret,
    key_id_of,
    new_api_key,
)
from cjo_platform.rpc.scopes import Scope

TOKEN = "s" * 32


def test_new_keys_are_unique_and_only_their_hash_is_kept() -> None:
    key_id, secret, digest = new_api_key()
    other = new_api_key()
    assert secret != other[1] and key_id != other[0]
    assert key_id_of(secret) == key_id
    assert digest == hash_secret(secret) and secret not in digest


async def test_service_token_acts_for_the_named_workspace() -> None:
    async def never(_: str) -> Principal | None:
        raise AssertionError("the service token must not be looked up as a key")

    auth = Authenticator(TOKEN, never)
    principal = await auth.authenticate({"authorization": f"Bearer {TOKEN}",
                                         "x-cjo-workspace": "acme"})
    assert principal == Principal("acme", "", True)


async def test_keys_are_resolved_and_cached() -> None:
    calls: list[str] = []
    key_id, secret, _ = new_api_key()

    async def resolve(candidate: str) -> Principal | None:
        calls.append(candidate)
        return Principal("acme", key_id, False) if candidate == secret else None

    auth = Authenticator(TOKEN, CachingResolver(resolve))
    for _ in range(3):
        principal = await auth.authenticate({"authorization": f"Bearer {secret}"})
        assert principal.workspace_id == "acme" and not principal.is_service
    assert calls == [secret]
    # A caller cannot pick its workspace with the header when using an API key.
    spoof = await auth.authenticate({"authorization": f"Bearer {secret}",
                                     "x-cjo-workspace": "other"})
    assert spoof.workspace_id == "acme"


@pytest.mark.parametrize("header", ["", "Basic abc", "Bearer ", "Bearer cjo_nokey",
                                    "Bearer cjo_abc_wrong"])
async def test_bad_credentials_are_unauthenticated(header: str) -> None:
    async def resolve(_: str) -> Principal | None:
        return None

    auth = Authenticator(TOKEN, resolve)
    with pytest.raises(Unauthenticated):
        await auth.authenticate({"authorization": header} if header else {})


async def test_a_revoked_key_is_refused_by_every_replica_within_the_cache_bound() -> None:
    # Two replicas (two authenticators, each with its own cache) in front of one key store.
    key_id, secret, _ = new_api_key()
    keys = {secret: Principal("acme", key_id, False)}
    now = 1000.0

    async def resolve(candidate: str) -> Principal | None:
        return keys.get(candidate)

    replicas = [Authenticator(TOKEN, CachingResolver(resolve, ttl=30.0, clock=lambda: now))
                for _ in range(2)]
    metadata = {"authorization": f"Bearer {secret}"}
    for replica in replicas:
        assert (await replica.authenticate(metadata)).key_id == key_id

    del keys[secret]  # revoked in identity
    now += 29.9  # inside the bound a replica may still trust its cache...
    assert (await replicas[0].authenticate(metadata)).key_id == key_id
    now += 0.2  # ...but no replica accepts the key once the bound passed
    for replica in replicas:
        with pytest.raises(Unauthenticated):
            await replica.authenticate(metadata)


async def test_the_replica_that_deleted_a_key_forgets_it_at_once() -> None:
    key_id, secret, _ = new_api_key()
    keys = {secret: Principal("acme", key_id, False)}

    async def resolve(candidate: str) -> Principal | None:
        return keys.get(candidate)

    cache = CachingResolver(resolve, clock=lambda: 0.0)
    assert await cache(secret) is not None
    del keys[secret]
    cache.forget_key(key_id)
    assert await cache(secret) is None


async def test_no_cache_when_the_bound_is_zero() -> None:
    calls = 0

    async def resolve(_: str) -> Principal | None:
        nonlocal calls
        calls += 1
        return Principal("acme", "k", False)

    cache = CachingResolver(resolve, ttl=0.0)
    for _ in range(3):
        await cache("cjo_k_secret")
    assert calls == 3


async def test_a_rotated_out_secret_is_not_trusted_past_its_expiry() -> None:
    # The cache's entry would last 30 s; the secret stops working 5 s after it was verified.
    key_id, secret, _ = new_api_key()
    wall = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    keys = {secret: Principal("acme", key_id, False, Scope.WRITE,
                              expire_time=wall + timedelta(seconds=5))}
    asked: list[str] = []

    async def resolve(candidate: str) -> Principal | None:
        asked.append(candidate)
        principal = keys.get(candidate)
        return principal if principal and principal.expire_time and \
            principal.expire_time > wall else None

    cache = CachingResolver(resolve, ttl=30.0, clock=lambda: 0.0, now=lambda: wall)
    assert (await cache(secret)) is not None
    wall += timedelta(seconds=4.9)
    assert (await cache(secret)) is not None and len(asked) == 1  # cached
    wall += timedelta(seconds=0.1)
    assert await cache(secret) is None  # asked again at its expiry, although cached
    assert len(asked) == 2


@pytest.mark.parametrize(("held", "method", "allowed"), [
    (Scope.ADMIN, "/cjo.identity.v1.WorkspaceService/RotateApiKey", True),
    (Scope.WRITE, "/cjo.identity.v1.WorkspaceService/RotateApiKey", False),
    (Scope.WRITE, "/cjo.delivery.v1.DeliveryService/CreateProvider", False),
    (Scope.WRITE, "/cjo.content.v1.ContentService/UpdateContentSettings", False),
    (Scope.WRITE, "/cjo.orchestration.v1.OrchestrationService/PublishJourney", True),
    (Scope.WRITE, "/cjo.identity.v1.IdentityService/IngestEvents", True),
    (Scope.WRITE, "/cjo.analytics.v1.AnalyticsService/GetJourneyFunnel", True),
    (Scope.READ, "/cjo.analytics.v1.AnalyticsService/GetJourneyFunnel", True),
    (Scope.READ, "/cjo.decisioning.v1.DecisioningService/Decide", False),
    (Scope.READ, "/cjo.identity.v1.IdentityService/IngestEvents", False),
    (Scope.INGEST, "/cjo.identity.v1.IdentityService/IngestEvents", True),
    (Scope.INGEST, "/cjo.identity.v1.IdentityService/GetProfile", False),
    (Scope.INGEST, "/cjo.common.v1.DeadLetterService/ListDeadLetters", False),
    # A method the table does not know needs ADMIN.
    (Scope.WRITE, "/cjo.identity.v1.IdentityService/SomethingNew", False),
    (Scope.ADMIN, "/cjo.identity.v1.IdentityService/SomethingNew", True),
])
def test_a_key_calls_only_what_its_scope_allows(held: Scope, method: str, allowed: bool) -> None:
    key = Principal("acme", "k", False, held)
    if allowed:
        authorize(key, method)
    else:
        with pytest.raises(PermissionDenied) as refused:
            authorize(key, method)
        assert refused.value.reason == "SCOPE_REQUIRED"
        assert refused.value.metadata["key_scope"] == held.label
    authorize(Principal("acme", "", True, Scope.INGEST), method)  # the service token: always
