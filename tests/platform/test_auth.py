from __future__ import annotations

import pytest

from cjo_platform.errors import Unauthenticated
from cjo_platform.rpc.auth import (
    Authenticator,
    CachingResolver,
    Principal,
    hash_secret,
    key_id_of,
    new_api_key,
)

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
