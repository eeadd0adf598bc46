"""Identity, asked for the profiles a BatchDecide decides for (one BatchGetProfiles per call)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import code_pb2

from cjo.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from cjo_platform.config import ServiceSettings
from cjo_platform.errors import CjoError, NotFound, Unavailable
from cjo_platform.profiles import view_from_proto
from cjo_platform.rpc.batch import in_halves_when_too_large
from cjo_platform.rpc.client import channel, on_behalf_of


@dataclass(frozen=True)
class Profile:
    """A person as identity holds them: ``profile_id`` is the survivor's when the id asked
    for was merged away; ``view`` is what eligibility and the model read as ``profile``."""

    profile_id: str
    view: dict[str, Any]


def profile_not_found(profile_id: str) -> NotFound:
    return NotFound(f"profile {profile_id!r} not found", reason="PROFILE_NOT_FOUND",
                    metadata={"profile_id": profile_id})


class _Miscounted(Exception):
    """Identity answered another number of profiles than asked."""


class ProfileBook:
    """BatchGetProfiles on behalf of the workspace, with the service token."""

    def __init__(self, settings: ServiceSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout

    async def profiles(self, workspace_id: str, profile_ids: Sequence[str],
                       ) -> list[Profile | CjoError]:
        """One answer per id, in order: the profile, NOT_FOUND (PROFILE_NOT_FOUND), or why
        identity could not say (UNAVAILABLE for the whole call)."""
        if not profile_ids:
            return []
        stub = identity_service_pb2_grpc.IdentityServiceStub(  # type: ignore[no-untyped-call]
            channel(self.settings.peer("identity")))

        async def call(ids: Sequence[str]) -> Sequence[Any]:
            reply = await stub.BatchGetProfiles(
                identity_service_pb2.BatchGetProfilesRequest(
                    names=[f"profiles/{profile_id}" for profile_id in ids]),
                metadata=on_behalf_of(self.settings.service_token, workspace_id),
                timeout=self.timeout)
            if len(reply.results) != len(ids):
                raise _Miscounted
            return list(reply.results)

        try:
            # An answer too large for one message (profiles near their limit) comes in halves.
            results = await in_halves_when_too_large(profile_ids, call)
        except grpc.aio.AioRpcError as exc:
            failure = Unavailable(f"identity: {exc.code().name}: {exc.details()}")
            return [failure] * len(profile_ids)
        except _Miscounted:
            return [Unavailable("identity answered the wrong number of profiles")] * len(
                profile_ids)
        answers: list[Profile | CjoError] = []
        for profile_id, result in zip(profile_ids, results, strict=True):
            if result.status.code == code_pb2.OK:
                answers.append(Profile(result.profile.profile_id,
                                       view_from_proto(result.profile)))
            elif result.status.code in (code_pb2.NOT_FOUND, code_pb2.INVALID_ARGUMENT):
                answers.append(profile_not_found(profile_id))
            else:
                answers.append(Unavailable(f"identity: {result.status.message}"))
        return answers
