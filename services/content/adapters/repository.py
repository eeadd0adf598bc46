"""Content item storage. Every query is scoped to one workspace."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import RowMapping, delete, select, update
from sqlalchemy.orm import Session

from cjo_content.adapters.tables import content_items
from cjo_content.domain.content_items import ContentDraft, ContentItem, EmailTemplate
from cjo_platform.db import insert_ignore

_t = content_items


def _email_json(email: EmailTemplate | None) -> dict[str, str] | None:
    if email is None:
        return None
    return {"subject": email.subject, "preheader": email.preheader, "html": email.html,
            "text": email.text}


def _to_item(row: RowMapping) -> ContentItem:
    body = row["email"]
    email = None if body is None else EmailTemplate(
        subject=body.get("subject", ""), preheader=body.get("preheader", ""),
        html=body.get("html", ""), text=body.get("text", ""))
    return ContentItem(key=row["key"], display_name=row["display_name"],
                       tags=tuple(row["tags"]), email=email, revision=int(row["revision"]),
                       create_time=row["create_time"], update_time=row["update_time"])


_COLUMNS = (_t.c.key, _t.c.display_name, _t.c.tags, _t.c.email, _t.c.revision,
            _t.c.create_time, _t.c.update_time)


def insert(session: Session, workspace_id: str, key: str, draft: ContentDraft,
           now: datetime) -> ContentItem | None:
    """Store a new item at revision 1; None when the key is already taken."""
    row = {"workspace_id": workspace_id, "key": key, "display_name": draft.display_name,
           "tags": list(draft.tags), "email": _email_json(draft.email), "revision": 1,
           "create_time": now, "update_time": now}
    if not insert_ignore(session, _t, [row], returning=_t.c.key):
        return None
    return ContentItem(key=key, display_name=draft.display_name, tags=draft.tags,
                       email=draft.email, revision=1, create_time=now, update_time=now)


def get(session: Session, workspace_id: str, key: str) -> ContentItem | None:
    row = session.execute(
        select(*_COLUMNS).where(_t.c.workspace_id == workspace_id, _t.c.key == key)
    ).mappings().first()
    return None if row is None else _to_item(row)


def get_many(session: Session, workspace_id: str, keys: Collection[str]) -> dict[str, ContentItem]:
    """The items among ``keys`` that exist, in one query."""
    if not keys:
        return {}
    rows = session.execute(
        select(*_COLUMNS).where(_t.c.workspace_id == workspace_id, _t.c.key.in_(list(keys)))
    ).mappings().all()
    return {row["key"]: _to_item(row) for row in rows}


def page(session: Session, workspace_id: str, after_key: str | None,
         limit: int) -> list[ContentItem]:
    """Up to ``limit`` items ordered by key, after ``after_key`` (a keyset cursor)."""
    query = select(*_COLUMNS).where(_t.c.workspace_id == workspace_id)
    if after_key is not None:
        query = query.where(_t.c.key > after_key)
    rows = session.execute(query.order_by(_t.c.key).limit(limit)).mappings().all()
    return [_to_item(row) for row in rows]


def save_revision(session: Session, workspace_id: str, current: ContentItem,
                  draft: ContentDraft, now: datetime) -> ContentItem | None:
    """Write ``draft`` as the next revision of ``current``; None when somebody else saved
    first (compare-and-set on the revision, so no lock is held while the caller validates)."""
    result = session.execute(
        update(_t)
        .where(_t.c.workspace_id == workspace_id, _t.c.key == current.key,
               _t.c.revision == current.revision)
        .values(display_name=draft.display_name, tags=list(draft.tags),
                email=_email_json(draft.email), revision=current.revision + 1, update_time=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return ContentItem(key=current.key, display_name=draft.display_name, tags=draft.tags,
                       email=draft.email, revision=current.revision + 1,
                       create_time=current.create_time, update_time=now)


def delete_revision(session: Session, workspace_id: str, key: str, revision: int) -> bool:
    """Delete the item if it is still at ``revision``."""
    result = session.execute(
        delete(_t).where(_t.c.workspace_id == workspace_id, _t.c.key == key,
                         _t.c.revision == revision)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
