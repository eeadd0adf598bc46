"""Content items (drafts): create, read, list, change and delete them.

Field violations name fields of the content item (``email.html``, ``key``); the API edge puts
them under its request field."""

from __future__ import annotations

from cjo_content.adapters import repository
from cjo_content.domain.content_items import (
    ContentDraft,
    ContentItem,
    UpdateMask,
    apply_update,
    check_draft,
    fit_page,
    template_bytes,
)
from cjo_content.domain.errors import check_etag, item_not_found, stale
from cjo_content.domain.validation import check_new_item, check_update
from cjo_content.service_layer.published_cache import PublishedCache
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import AlreadyExists

ITEM = "content item"


def create(uow: UnitOfWork, workspace_id: str, key: str, draft: ContentDraft) -> ContentItem:
    """A new item at revision 1; ALREADY_EXISTS when the key is taken."""
    check_new_item(key, draft).raise_if_any()
    item = repository.insert(uow.session, workspace_id, key, draft, uow.now())
    if item is None:
        raise AlreadyExists(f"content item {key!r} already exists",
                            reason="CONTENT_ITEM_EXISTS", metadata={"content_key": key})
    return item


def get(uow: UnitOfWork, workspace_id: str, key: str) -> ContentItem:
    item = repository.get(uow.session, workspace_id, key)
    if item is None:
        raise item_not_found(key)
    return item


def page(uow: UnitOfWork, workspace_id: str, after: str | None, size: int,
         tag: str = "") -> tuple[list[ContentItem], str | None]:
    """Up to ``size`` items by key after ``after``, only those tagged ``tag`` when it is set,
    fewer when their templates would not fit a message (fit_page); and the key to continue
    after, None on the last page."""
    items = repository.page(uow.session, workspace_id, after, size + 1, tag)
    size = min(size, fit_page(template_bytes(item.draft) for item in items[:size]))
    return items[:size], items[size - 1].key if len(items) > size else None


def locked(uow: UnitOfWork, workspace_id: str, key: str, etag: str) -> ContentItem:
    """The item as stored now, locked until the change commits (so a change without an etag
    applies on top of whatever a concurrent writer saved); the caller's etag, when given, must
    still match."""
    item = repository.get(uow.session, workspace_id, key, for_update=True)
    if item is None:
        raise item_not_found(key)
    check_etag(ITEM, key, etag, item.etag)
    return item


def update(uow: UnitOfWork, workspace_id: str, key: str, patch: ContentDraft, mask: UpdateMask,
           etag: str = "") -> ContentItem:
    """The masked fields of ``patch`` written as the item's next revision; an update that
    changes nothing keeps the revision and etag. ABORTED when ``etag`` is stale."""
    check_update(patch, mask).raise_if_any()
    current = locked(uow, workspace_id, key, etag)
    draft = apply_update(current.draft, patch, mask)
    if draft == current.draft:
        return current
    check_draft(draft, template_bytes(current.draft)).raise_if_any()
    saved = repository.save_revision(uow.session, workspace_id, current, draft, uow.now())
    if saved is None:
        raise stale(ITEM, key, current.etag)
    return saved


def delete(uow: UnitOfWork, workspace_id: str, key: str, etag: str = "",
           published: PublishedCache | None = None) -> None:
    """Delete the item and its published versions (``published``, every replica's cache,
    hears of it after the commit). ABORTED when ``etag`` is stale."""
    current = locked(uow, workspace_id, key, etag)
    if not repository.delete_revision(uow.session, workspace_id, key, current.revision):
        raise stale(ITEM, key, current.etag)
    if published is not None:
        published.changed(uow, workspace_id)
