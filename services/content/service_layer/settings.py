"""A workspace's content settings: its default locale, the end of every fallback chain.

Field violations name fields of the settings (``default_locale``)."""

from __future__ import annotations

from cjo_content.adapters import repository
from cjo_content.domain.errors import check_etag, stale
from cjo_content.domain.settings import SETTINGS_NAME, ContentSettings, apply_settings_update
from cjo_content.service_layer.published_cache import PublishedCache
from cjo_platform.db.unit_of_work import UnitOfWork

SETTINGS = "content settings"


def get(uow: UnitOfWork, workspace_id: str) -> ContentSettings:
    """The workspace's settings; the defaults (revision 0) when it never changed them."""
    return repository.get_settings(uow.session, workspace_id)


def update(uow: UnitOfWork, workspace_id: str, patch: ContentSettings, mask: frozenset[str],
           etag: str = "", published: PublishedCache | None = None) -> ContentSettings:
    """The masked fields of ``patch`` saved as the next revision; an update that changes
    nothing keeps the revision and etag.

    Without an etag the last writer wins: the row is locked while the change is computed, and
    two first saves racing to insert it end in an IntegrityError that the unit of work answers
    by running again on top of the winner's row. With an etag a stale one is ABORTED."""
    current = repository.get_settings(uow.session, workspace_id, for_update=True)
    updated = apply_settings_update(current, patch, mask)  # bad values before a stale etag
    check_etag(SETTINGS, SETTINGS_NAME, etag, current.etag)
    if updated == current:
        return current
    saved = repository.save_settings(uow.session, workspace_id, current, updated, uow.now())
    if saved is None:
        raise stale(SETTINGS, SETTINGS_NAME, current.etag)
    if published is not None:  # renders read the default locale
        published.changed(uow, workspace_id)
    return saved
