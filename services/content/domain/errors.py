"""What a caller is told when a content item, version, snippet or etag is not what it asked
for: one spelling of each error, whichever use-case raises it."""

from __future__ import annotations

from cjo_platform.errors import Aborted, FailedPrecondition, NotFound


def item_not_found(key: str) -> NotFound:
    return NotFound(f"content item {key!r} not found", reason="CONTENT_ITEM_NOT_FOUND",
                    metadata={"content_key": key})


def version_not_found(key: str, version: int) -> NotFound:
    return NotFound(f"content item {key!r} has no version {version}",
                    reason="CONTENT_VERSION_NOT_FOUND",
                    metadata={"content_key": key, "version": str(version)})


def not_published(key: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"content item {key!r} has no published version; publish it first",
        reason="CONTENT_NOT_PUBLISHED", metadata={"content_key": key})


def snippet_not_found(key: str) -> NotFound:
    return NotFound(f"snippet {key!r} not found", reason="SNIPPET_NOT_FOUND",
                    metadata={"snippet_key": key})


def stale(what: str, key: str, etag: str) -> Aborted:
    return Aborted(f"{what} {key!r} changed since etag {etag!r} was read; read it again",
                   metadata={"key": key})


def check_etag(what: str, key: str, expected: str, actual: str) -> None:
    """An etag the caller sent (empty: none) must still be the stored one."""
    if expected and expected != actual:
        raise stale(what, key, expected)
