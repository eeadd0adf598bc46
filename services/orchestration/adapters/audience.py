"""Identity as the scheduler's audience source: a segment's members, a page at a time, and
their traits (one ListSegmentMembers and one BatchGetProfiles call per page)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
from google.rpc import code_pb2

from cjo.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from cjo_orchestration.adapters import stubs
from cjo_platform.config import ServiceSettings
from cjo_platform.profiles import view_from_proto
from cjo_platform.rpc.batch import chunks, in_halves_when_too_large
from cjo_platform.rpc.client import channel, on_behalf_of

# Answers that a retry cannot change: the occurrence fails (the next one is still planned).
# Every other code (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, ...) may pass.
PERMANENT = frozenset({code_pb2.INVALID_ARGUMENT, code_pb2.NOT_FOUND,
                       code_pb2.PERMISSION_DENIED, code_pb2.FAILED_PRECONDITION})


class AudienceError(Exception):
    """Identity could not give a page of the audience; ``permanent`` when retrying cannot help
    (the segment is gone, the id is refused, the service may not read it)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code  # a google.rpc.Code value

    @property
    def permanent(self) -> bool:
        return self.code in PERMANENT

    @property
    def code_name(self) -> str:
        return code_pb2.Code.Name(self.code) if self.code in code_pb2.Code.values() else str(
            self.code)

    @classmethod
    def of(cls, exc: grpc.aio.AioRpcError, what: str) -> AudienceError:
        code = exc.code().value[0]
        return cls(code, f"{what}: {exc.code().name} {exc.details() or ''}".rstrip())


@dataclass(frozen=True)
class MemberPage:
    profile_ids: list[str]
    next_page_token: str  # "" on the last page


class Audience:
    """Reads segment members and their traits from identity, for a workspace, with the service
    token. Every failure is an AudienceError with its canonical code."""

    def __init__(self, settings: ServiceSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout

    def _stub(self) -> identity_service_pb2_grpc.IdentityServiceStub:
        return stubs.identity(channel(self.settings.peer("identity")))

    async def members(self, workspace_id: str, segment_id: str, page_token: str,
                      page_size: int) -> MemberPage:
        try:
            reply = await self._stub().ListSegmentMembers(
                identity_service_pb2.ListSegmentMembersRequest(
                    parent=f"segments/{segment_id}", page_size=page_size,
                    page_token=page_token),
                metadata=on_behalf_of(self.settings.service_token, workspace_id),
                timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise AudienceError.of(exc, f"listing segment {segment_id}") from None
        return MemberPage(list(reply.profile_ids), reply.next_page_token)

    async def _profiles(self, workspace_id: str, profile_ids: Sequence[str]) -> list[Any]:
        reply = await self._stub().BatchGetProfiles(
            identity_service_pb2.BatchGetProfilesRequest(
                names=[f"profiles/{p}" for p in profile_ids]),
            metadata=on_behalf_of(self.settings.service_token, workspace_id),
            timeout=self.timeout)
        if len(reply.results) != len(profile_ids):
            raise AudienceError(code_pb2.INTERNAL,
                                f"identity answered {len(reply.results)} profiles for "
                                f"{len(profile_ids)} names")
        return list(reply.results)

    async def traits(self, workspace_id: str,
                     profile_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Profile views (cjo_platform.profiles) keyed by the profile identity answered with, in
        listing order: a profile merged away since the listing resolves to its survivor, so a
        person listed under both ids appears once, under the id that still exists. A profile
        that no longer exists (or that identity refuses to read) is left out."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunks(profile_ids):
            try:
                # An answer too large for one message (profiles near their limit) comes in
                # halves.
                results = await in_halves_when_too_large(chunk, partial(
                    self._profiles, workspace_id))
            except grpc.aio.AioRpcError as exc:
                raise AudienceError.of(exc, "reading profiles") from None
            for profile_id, result in zip(chunk, results, strict=True):
                if result.status.code == code_pb2.OK:
                    survivor = result.profile.profile_id or profile_id
                    found.setdefault(survivor, view_from_proto(result.profile))
                elif result.status.code not in PERMANENT:
                    # This profile may be readable on a retry: the page is tried again. One a
                    # retry cannot read (gone, refused) is left out, like a deleted one.
                    raise AudienceError(result.status.code,
                                        f"reading profile {profile_id}: "
                                        f"{result.status.message}")
        return found
