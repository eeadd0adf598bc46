"""The content service, asked which content keys a workspace lacks: one client for every
service that refuses to save something naming missing content (orchestration's journey
publication, decisioning's actions).

It asks GetContentItem per key, on behalf of the workspace with the service token. Saving must
not depend on content being up: when content cannot answer, nothing is reported missing (it is
logged), and a send of missing content fails visibly later."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import grpc

from cjo.content.v1 import content_service_pb2, content_service_pb2_grpc
from cjo_platform.config import ServiceSettings
from cjo_platform.logging import get_logger
from cjo_platform.rpc.client import channel, on_behalf_of

log = get_logger(__name__)


class ContentCatalog:
    """Which content keys are missing in a workspace."""

    def __init__(self, settings: ServiceSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout

    async def missing(self, workspace_id: str, keys: Collection[str]) -> list[str]:
        """The keys of ``keys`` content does not have, sorted (none when content cannot say)."""
        if not keys:
            return []
        # The generated *_pb2_grpc modules carry no annotations.
        stub = content_service_pb2_grpc.ContentServiceStub(  # type: ignore[no-untyped-call]
            channel(self.settings.peer("content")))
        metadata = on_behalf_of(self.settings.service_token, workspace_id)

        async def absent(key: str) -> bool:
            try:
                await stub.GetContentItem(
                    content_service_pb2.GetContentItemRequest(name=f"contentItems/{key}"),
                    metadata=metadata, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    log.warning("content could not say whether an item exists", key=key,
                                code=exc.code().name)
                return bool(exc.code() == grpc.StatusCode.NOT_FOUND)
            return False

        ordered = sorted(set(keys))
        answers = await asyncio.gather(*(absent(key) for key in ordered))
        return [key for key, gone in zip(ordered, answers, strict=True) if gone]
