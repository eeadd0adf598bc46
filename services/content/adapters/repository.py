"""Content storage: items (drafts), published versions and snippets. Every query is scoped
to one workspace."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    RowMapping,
    String,
    and_,
    bindparam,
    delete,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from cjo_content.adapters.tables import content_items, content_settings, content_versions, snippets
from cjo_content.domain.content_items import (
    CHANNELS,
    ChannelBodies,
    ContentDraft,
    ContentItem,
    ContentVersion,
    EmailTemplate,
    InAppButtonTemplate,
    InAppTemplate,
    Localization,
    MissingVariables,
    PushTemplate,
    SmsTemplate,
    Variant,
    WebhookTemplate,
)
from cjo_content.domain.settings import ContentSettings
from cjo_content.domain.snippets import Snippet
from cjo_platform.db import insert_ignore

_t = content_items
_v = content_versions
_s = snippets
_cs = content_settings


# --- draft <-> JSON --------------------------------------------------------------------------


def _body_json(body: object | None) -> dict[str, Any] | None:
    return None if body is None else asdict(body)  # type: ignore[call-overload]


def _bodies_json(bodies: ChannelBodies) -> dict[str, Any]:
    return {channel: _body_json(bodies.body(channel)) for channel in CHANNELS
            if bodies.body(channel) is not None}


def _bodies_from_json(doc: Mapping[str, Any]) -> ChannelBodies:
    email, sms, push, in_app, webhook = (doc.get(c) for c in CHANNELS)
    return ChannelBodies(
        email=None if email is None else EmailTemplate(**email),
        sms=None if sms is None else SmsTemplate(**sms),
        push=None if push is None else PushTemplate(**push),
        in_app=None if in_app is None else InAppTemplate(
            title=in_app.get("title", ""), body=in_app.get("body", ""),
            buttons=tuple(InAppButtonTemplate(**b) for b in in_app.get("buttons", ()))),
        webhook=None if webhook is None else WebhookTemplate(**webhook))


def _channels_json(draft: ContentDraft) -> dict[str, Any]:
    """Everything of a draft but the columns of its own (name, tags, email)."""
    return {"sms": _body_json(draft.sms), "push": _body_json(draft.push),
            "in_app": _body_json(draft.in_app), "webhook": _body_json(draft.webhook),
            "missing_variables": draft.missing_variables.value,
            "default_locale": draft.default_locale,
            "localizations": [{"locale": loc.locale, **_bodies_json(loc.bodies)}
                              for loc in draft.localizations],
            "variants": [{"key": v.key, "weight": v.weight, **_bodies_json(v.bodies)}
                         for v in draft.variants],
            "experiment_key": draft.experiment_key}


def draft_json(draft: ContentDraft) -> dict[str, Any]:
    return {"display_name": draft.display_name, "tags": list(draft.tags),
            "email": _body_json(draft.email), **_channels_json(draft)}


def draft_from_json(doc: Mapping[str, Any], email: Mapping[str, Any] | None) -> ContentDraft:
    base = _bodies_from_json({**doc, "email": email})
    return ContentDraft(
        display_name=doc.get("display_name", ""), tags=tuple(doc.get("tags", ())),
        email=base.email, sms=base.sms, push=base.push, in_app=base.in_app,
        webhook=base.webhook,
        missing_variables=MissingVariables(doc.get("missing_variables") or "lenient"),
        default_locale=doc.get("default_locale", ""),
        localizations=tuple(Localization(loc["locale"], _bodies_from_json(loc))
                            for loc in doc.get("localizations", ())),
        variants=tuple(Variant(v["key"], int(v["weight"]), _bodies_from_json(v))
                       for v in doc.get("variants", ())),
        experiment_key=doc.get("experiment_key", ""))


def _to_item(row: RowMapping) -> ContentItem:
    doc = dict(row["channels"] or {})
    doc |= {"display_name": row["display_name"], "tags": row["tags"]}
    return ContentItem(key=row["key"], draft=draft_from_json(doc, row["email"]),
                       revision=int(row["revision"]), create_time=row["create_time"],
                       update_time=row["update_time"],
                       latest_version=int(row["latest_version"]))


_COLUMNS = (_t.c.key, _t.c.display_name, _t.c.tags, _t.c.email, _t.c.channels, _t.c.revision,
            _t.c.create_time, _t.c.update_time, _t.c.latest_version)


def _draft_values(draft: ContentDraft) -> dict[str, Any]:
    return {"display_name": draft.display_name, "tags": list(draft.tags),
            "email": _body_json(draft.email), "channels": _channels_json(draft)}


# --- items -----------------------------------------------------------------------------------


def insert(session: Session, workspace_id: str, key: str, draft: ContentDraft,
           now: datetime) -> ContentItem | None:
    """Store a new item at revision 1; None when the key is already taken."""
    row = {"workspace_id": workspace_id, "key": key, **_draft_values(draft), "revision": 1,
           "create_time": now, "update_time": now, "latest_version": 0}
    if not insert_ignore(session, _t, [row], returning=_t.c.key):
        return None
    return ContentItem(key=key, draft=draft, revision=1, create_time=now, update_time=now)


def get(session: Session, workspace_id: str, key: str, *,
        for_update: bool = False) -> ContentItem | None:
    """The item; ``for_update`` locks its row until the transaction ends (PostgreSQL), so a
    change computed from it cannot lose a race to a concurrent writer."""
    query = select(*_COLUMNS).where(_t.c.workspace_id == workspace_id, _t.c.key == key)
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).mappings().first()
    return None if row is None else _to_item(row)


def page(session: Session, workspace_id: str, after_key: str | None, limit: int,
         tag: str = "") -> list[ContentItem]:
    """Up to ``limit`` items ordered by key, after ``after_key`` (a keyset cursor), only those
    carrying ``tag`` when it is set. Tags are a JSON list (no portable index on SQLite and
    PostgreSQL), so tagged listing scans the workspace's items in key order, a chunk at a time."""
    items: list[ContentItem] = []
    while len(items) < limit:
        query = select(*_COLUMNS).where(_t.c.workspace_id == workspace_id)
        if after_key is not None:
            query = query.where(_t.c.key > after_key)
        chunk = max(limit, 200) if tag else limit
        rows = session.execute(query.order_by(_t.c.key).limit(chunk)).mappings().all()
        for row in rows:
            if not tag or tag in row["tags"]:
                items.append(_to_item(row))
        if len(rows) < chunk:
            break
        after_key = rows[-1]["key"]
    return items[:limit]


def save_revision(session: Session, workspace_id: str, current: ContentItem,
                  draft: ContentDraft, now: datetime) -> ContentItem | None:
    """Write ``draft`` as the next revision of ``current``; None when somebody else saved
    first (compare-and-set on the revision, so no lock is held while the caller validates)."""
    result = session.execute(
        update(_t)
        .where(_t.c.workspace_id == workspace_id, _t.c.key == current.key,
               _t.c.revision == current.revision)
        .values(**_draft_values(draft), revision=current.revision + 1, update_time=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return ContentItem(key=current.key, draft=draft, revision=current.revision + 1,
                       create_time=current.create_time, update_time=now,
                       latest_version=current.latest_version)


def delete_revision(session: Session, workspace_id: str, key: str, revision: int) -> bool:
    """Delete the item, with its versions, if it is still at ``revision``."""
    result = session.execute(
        delete(_t).where(_t.c.workspace_id == workspace_id, _t.c.key == key,
                         _t.c.revision == revision)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(delete(_v).where(_v.c.workspace_id == workspace_id, _v.c.key == key))
    return True


# --- versions --------------------------------------------------------------------------------


def fingerprint(document: Mapping[str, Any], snippet_sources: Mapping[str, str]) -> str:
    text = json.dumps([document, snippet_sources], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def publish(session: Session, workspace_id: str, item: ContentItem, draft: ContentDraft,
            revision: int, snippet_sources: Mapping[str, str], now: datetime,
            rolled_back_from: int = 0) -> ContentVersion | None:
    """Store ``draft`` as version ``item.latest_version + 1``; None when another publish of
    the item won the race (compare-and-set on ``latest_version``)."""
    version = item.latest_version + 1
    moved = session.execute(
        update(_t).where(_t.c.workspace_id == workspace_id, _t.c.key == item.key,
                         _t.c.latest_version == item.latest_version)
        .values(latest_version=version))
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return None
    document = draft_json(draft)
    session.execute(_v.insert().values(
        workspace_id=workspace_id, key=item.key, version=version, revision=revision,
        document=document, snippets=dict(snippet_sources),
        fingerprint=fingerprint(document, snippet_sources), rolled_back_from=rolled_back_from,
        create_time=now))
    return ContentVersion(key=item.key, version=version, revision=revision, draft=draft,
                          snippets=dict(snippet_sources), create_time=now,
                          rolled_back_from=rolled_back_from)


def _to_version(row: RowMapping) -> ContentVersion:
    doc = row["document"]
    return ContentVersion(key=row["key"], version=int(row["version"]),
                          revision=int(row["revision"]),
                          draft=draft_from_json(doc, doc.get("email")),
                          snippets=row["snippets"], create_time=row["create_time"],
                          rolled_back_from=int(row["rolled_back_from"]))


_VERSION_COLUMNS = (_v.c.key, _v.c.version, _v.c.revision, _v.c.document, _v.c.snippets,
                    _v.c.create_time, _v.c.rolled_back_from, _v.c.fingerprint)


def get_version(session: Session, workspace_id: str, key: str,
                version: int) -> ContentVersion | None:
    row = session.execute(select(*_VERSION_COLUMNS).where(
        _v.c.workspace_id == workspace_id, _v.c.key == key, _v.c.version == version)
    ).mappings().first()
    return None if row is None else _to_version(row)


def versions_page(session: Session, workspace_id: str, key: str, before: int | None,
                  limit: int) -> list[ContentVersion]:
    """Up to ``limit`` versions newest first, older than ``before``."""
    query = select(*_VERSION_COLUMNS).where(_v.c.workspace_id == workspace_id, _v.c.key == key)
    if before is not None:
        query = query.where(_v.c.version < before)
    rows = session.execute(query.order_by(_v.c.version.desc()).limit(limit)).mappings().all()
    return [_to_version(row) for row in rows]


def latest_versions(session: Session, workspace_id: str,
                    keys: Collection[str]) -> dict[str, int]:
    """Item key -> latest published version (0 if never published), for the items that exist."""
    if not keys:
        return {}
    rows = session.execute(select(_t.c.key, _t.c.latest_version).where(
        _t.c.workspace_id == workspace_id, _t.c.key.in_(list(keys)))).all()
    return {key: int(latest) for key, latest in rows}


@dataclass(frozen=True)
class RenderLookup:
    """What rendering needs to know before it renders: per item that exists, its latest
    published version (0 if never published) and that version's fingerprint ("" when none);
    and the workspace's default locale."""

    latest: dict[str, int]
    latest_fingerprints: dict[tuple[str, int], str]
    default_locale: str


# The items' latest versions, their fingerprints and the workspace's default locale in ONE
# statement, built once (a render call of one person used to run three, each built anew:
# building and compiling them was a fifth of content's CPU per call at a steady rate).
_w: BindParameter[str] = bindparam("w", type_=String())
_LOOKUP = select(
    _t.c.key, _t.c.latest_version, _v.c.fingerprint,
    select(_cs.c.default_locale).where(_cs.c.workspace_id == _w).scalar_subquery(),
).select_from(_t.outerjoin(_v, and_(_v.c.workspace_id == _t.c.workspace_id,
                                     _v.c.key == _t.c.key,
                                     _v.c.version == _t.c.latest_version))
).where(_t.c.workspace_id == _w, _t.c.key.in_(bindparam("keys", expanding=True)))


def render_lookup(session: Session, workspace_id: str, keys: Collection[str]) -> RenderLookup:
    """The latest versions of the items among ``keys`` that exist, their fingerprints and the
    workspace's default locale: one query (two when none of the items exists)."""
    rows = (session.execute(_LOOKUP, {"w": workspace_id, "keys": sorted(keys)}).all()
            if keys else [])
    latest = {key: int(version) for key, version, _, _ in rows}
    prints = {(key, int(version)): fingerprint for key, version, fingerprint, _ in rows
              if version and fingerprint is not None}
    if not rows:
        return RenderLookup({}, {}, get_settings(session, workspace_id).default_locale)
    # The column is NOT NULL: NULL says the workspace never saved settings.
    return RenderLookup(latest, prints, rows[0][3] or ContentSettings().default_locale)


def fingerprints(session: Session, workspace_id: str,
                 wanted: Collection[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """(key, version) -> fingerprint for the versions that exist, in one query."""
    if not wanted:
        return {}
    rows = session.execute(select(_v.c.key, _v.c.version, _v.c.fingerprint).where(
        _v.c.workspace_id == workspace_id,
        tuple_(_v.c.key, _v.c.version).in_(list(wanted)))).all()
    return {(key, int(version)): fp for key, version, fp in rows}


def versions(session: Session, workspace_id: str,
             wanted: Collection[tuple[str, int]]) -> dict[tuple[str, int], ContentVersion]:
    """The versions among ``wanted`` that exist, in one query."""
    if not wanted:
        return {}
    rows = session.execute(select(*_VERSION_COLUMNS).where(
        _v.c.workspace_id == workspace_id,
        tuple_(_v.c.key, _v.c.version).in_(list(wanted)))).mappings().all()
    return {(row["key"], int(row["version"])): _to_version(row) for row in rows}


# --- snippets --------------------------------------------------------------------------------

_SNIPPET_COLUMNS = (_s.c.key, _s.c.source, _s.c.revision, _s.c.create_time, _s.c.update_time)


def _to_snippet(row: RowMapping) -> Snippet:
    return Snippet(key=row["key"], source=row["source"], revision=int(row["revision"]),
                   create_time=row["create_time"], update_time=row["update_time"])


def insert_snippet(session: Session, workspace_id: str, key: str, source: str,
                   now: datetime) -> Snippet | None:
    row = {"workspace_id": workspace_id, "key": key, "source": source, "revision": 1,
           "create_time": now, "update_time": now}
    if not insert_ignore(session, _s, [row], returning=_s.c.key):
        return None
    return Snippet(key=key, source=source, revision=1, create_time=now, update_time=now)


def get_snippet(session: Session, workspace_id: str, key: str, *,
                for_update: bool = False) -> Snippet | None:
    """The snippet; ``for_update`` locks its row until the transaction ends (PostgreSQL)."""
    query = select(*_SNIPPET_COLUMNS).where(_s.c.workspace_id == workspace_id, _s.c.key == key)
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).mappings().first()
    return None if row is None else _to_snippet(row)


def snippet_sources(session: Session, workspace_id: str,
                    keys: Collection[str]) -> dict[str, str]:
    if not keys:
        return {}
    rows = session.execute(select(_s.c.key, _s.c.source).where(
        _s.c.workspace_id == workspace_id, _s.c.key.in_(list(keys)))).all()
    return {key: source for key, source in rows}


def snippets_page(session: Session, workspace_id: str, after_key: str | None,
                  limit: int) -> list[Snippet]:
    query = select(*_SNIPPET_COLUMNS).where(_s.c.workspace_id == workspace_id)
    if after_key is not None:
        query = query.where(_s.c.key > after_key)
    rows = session.execute(query.order_by(_s.c.key).limit(limit)).mappings().all()
    return [_to_snippet(row) for row in rows]


def save_snippet(session: Session, workspace_id: str, current: Snippet, source: str,
                 now: datetime) -> Snippet | None:
    result = session.execute(
        update(_s).where(_s.c.workspace_id == workspace_id, _s.c.key == current.key,
                         _s.c.revision == current.revision)
        .values(source=source, revision=current.revision + 1, update_time=now))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return Snippet(key=current.key, source=source, revision=current.revision + 1,
                   create_time=current.create_time, update_time=now)


def delete_snippet(session: Session, workspace_id: str, key: str, revision: int) -> bool:
    result = session.execute(delete(_s).where(
        _s.c.workspace_id == workspace_id, _s.c.key == key, _s.c.revision == revision))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def count_versions(session: Session, workspace_id: str, key: str) -> int:
    return int(session.execute(select(func.count()).where(
        _v.c.workspace_id == workspace_id, _v.c.key == key)).scalar_one())


# --- settings --------------------------------------------------------------------------------


def get_settings(session: Session, workspace_id: str, *,
                 for_update: bool = False) -> ContentSettings:
    """The workspace's settings; the defaults when it never changed them. ``for_update``
    locks the workspace's row, when it has one, until the transaction ends (PostgreSQL)."""
    query = select(_cs.c.default_locale, _cs.c.revision, _cs.c.update_time).where(
        _cs.c.workspace_id == workspace_id)
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).first()
    if row is None:
        return ContentSettings()
    return ContentSettings(default_locale=row.default_locale, revision=int(row.revision),
                           update_time=row.update_time)


def save_settings(session: Session, workspace_id: str, current: ContentSettings,
                  settings: ContentSettings, now: datetime) -> ContentSettings | None:
    """Write ``settings`` as the next revision of ``current``; None when somebody else saved
    first (compare-and-set on the revision). The first save inserts the row: a concurrent
    first save makes it fail with the database's IntegrityError, so the unit of work runs
    again and reads the winner's row."""
    saved = ContentSettings(default_locale=settings.default_locale,
                            revision=current.revision + 1, update_time=now)
    values = {"default_locale": saved.default_locale, "revision": saved.revision,
              "update_time": now}
    if current.revision == 0:
        session.execute(_cs.insert().values(workspace_id=workspace_id, **values))
        return saved
    result = session.execute(update(_cs).where(
        _cs.c.workspace_id == workspace_id, _cs.c.revision == current.revision).values(**values))
    return saved if result.rowcount == 1 else None  # type: ignore[attr-defined]
