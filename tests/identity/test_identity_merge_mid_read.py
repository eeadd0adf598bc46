"""A merge that commits between a read's statements. Profile and consent reads run in no
transaction (each statement sees what was committed when it ran): a merge landing after an id
was resolved to itself, and before its profile was loaded, deleted that profile. The read must
answer with the survivor, not as missing: orchestration takes a missing profile for an erased
person and ends the journey; delivery is refused the send."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from identity_support import Identity, event, ingest

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters import profiles


async def merged_after_resolving(identity: Identity, monkeypatch: pytest.MonkeyPatch,
                                 read: Callable[[str, str, Any], Any]) -> Any:
    """``read(anonymous profile id, known profile id, metadata)`` while the first resolve of
    the two ids is followed, before anything else is read, by an event that merges them."""
    acme = await identity.new_workspace("acme")
    [anonymous] = await ingest(identity, acme, event("m1", ("anonymous_id", "a1")))
    [known] = await ingest(identity, acme, event("m2", ("user_id", "u1")))
    loop = asyncio.get_running_loop()
    real = profiles.resolve_profile_ids
    merges: list[None] = []

    def resolve(session: Any, workspace_id: str, ids: Any) -> dict[str, str]:
        found = real(session, workspace_id, ids)
        if not merges:
            merges.append(None)
            asyncio.run_coroutine_threadsafe(ingest(identity, acme, event(
                "m3", ("anonymous_id", "a1"), ("user_id", "u1"))), loop).result(30)
        return found

    monkeypatch.setattr(profiles, "resolve_profile_ids", resolve)
    answer = await read(anonymous.profile_id, known.profile_id, acme)
    assert merges
    return answer


async def test_a_profile_merged_mid_read_is_answered_by_its_survivor(
        identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    async def read(anonymous: str, known: str, metadata: Any) -> Any:
        return await identity.events.BatchGetProfiles(pb.BatchGetProfilesRequest(
            names=[f"profiles/{anonymous}", f"profiles/{known}"]), metadata=metadata)

    got = await merged_after_resolving(identity, monkeypatch, read)
    [first, second] = [(r.status.code, r.profile.name) for r in got.results]
    assert first == second and first[0] == 0 and first[1], got  # both: the one survivor


async def test_consent_for_a_profile_merged_mid_read_is_its_survivors(
        identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    async def read(anonymous: str, known: str, metadata: Any) -> Any:
        return await identity.events.BatchCheckConsent(pb.BatchCheckConsentRequest(queries=[
            consent_pb2.ConsentQuery(profile_id=anonymous, channel=common_pb2.CHANNEL_EMAIL),
            consent_pb2.ConsentQuery(profile_id=known, channel=common_pb2.CHANNEL_EMAIL)]),
            metadata=metadata)

    got = await merged_after_resolving(identity, monkeypatch, read)
    # Email is opt-out: the survivor, who said nothing, may be sent to; an unknown profile not.
    assert [(r.decision.state, r.decision.allowed) for r in got.results] == [
        (consent_pb2.CONSENT_STATE_UNKNOWN, True)] * 2
