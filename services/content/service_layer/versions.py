"""Published versions: publish a draft, roll back to an earlier version, list the versions.

A version freezes the draft together with the sources of every snippet it includes, so a
snippet changed later never changes what was published."""

from __future__ import annotations

from cjo_content.adapters import repository
from cjo_content.domain.content_items import (
    MAX_VERSION_BYTES,
    ContentVersion,
    fit_page,
    version_bytes,
)
from cjo_content.domain.errors import item_not_found, stale, version_not_found
from cjo_content.domain.snippets import resolve_snippets
from cjo_content.service_layer.content_items import ITEM, locked
from cjo_content.service_layer.published_cache import PublishedCache
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import FailedPrecondition, InvalidArgument


def publish(uow: UnitOfWork, workspace_id: str, key: str, etag: str = "",
            published: PublishedCache | None = None) -> ContentVersion:
    """The item's draft as its next version. ABORTED when ``etag`` is stale;
    FAILED_PRECONDITION when it includes a snippet that does not exist, or when its
    templates and snippets together pass MAX_VERSION_BYTES (checked before anything is
    written). ``published`` (every replica's cache) hears of it after the commit."""
    current = locked(uow, workspace_id, key, etag)
    snippets = resolve_snippets(
        current.draft.template_sources().values(),
        lambda keys: repository.snippet_sources(uow.session, workspace_id, keys))
    size = version_bytes(current.draft, snippets)
    if size > MAX_VERSION_BYTES:
        raise FailedPrecondition(
            f"content item {key!r} cannot be published: its templates and the snippets they "
            f"include take {size} bytes together; a version may take at most "
            f"{MAX_VERSION_BYTES} ({MAX_VERSION_BYTES // 2**20} MiB)",
            reason="VERSION_TOO_LARGE",
            metadata={"content_key": key, "bytes": str(size), "limit": str(MAX_VERSION_BYTES)})
    version = repository.publish(uow.session, workspace_id, current, current.draft,
                                 current.revision, snippets, uow.now())
    if version is None:
        raise stale(ITEM, key, current.etag)
    if published is not None:
        published.changed(uow, workspace_id)
    return version


def rollback(uow: UnitOfWork, workspace_id: str, key: str, version: int,
             published: PublishedCache | None = None) -> ContentVersion:
    """Version ``version`` (draft and snippets as they were) published again as the next
    version; the draft is left alone."""
    if version <= 0:
        raise InvalidArgument.one("version", "must be a published version number")
    current = locked(uow, workspace_id, key, "")
    old = repository.get_version(uow.session, workspace_id, key, version)
    if old is None:
        raise version_not_found(key, version)
    republished = repository.publish(uow.session, workspace_id, current, old.draft,
                                     old.revision, old.snippets, uow.now(),
                                     rolled_back_from=old.version)
    if republished is None:
        raise stale(ITEM, key, current.etag)
    if published is not None:
        published.changed(uow, workspace_id)
    return republished


def page(uow: UnitOfWork, workspace_id: str, key: str, before: int | None,
         size: int) -> tuple[list[ContentVersion], int | None]:
    """Up to ``size`` versions of the item, newest first, older than ``before``, fewer when
    they would not fit a message (fit_page); and the version to continue before, None on the
    last page."""
    if repository.get(uow.session, workspace_id, key) is None:
        raise item_not_found(key)
    versions = repository.versions_page(uow.session, workspace_id, key, before, size + 1)
    size = min(size, fit_page(version_bytes(v.draft, v.snippets) for v in versions[:size]))
    return versions[:size], versions[size - 1].version if len(versions) > size else None
