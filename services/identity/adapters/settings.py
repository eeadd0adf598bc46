"""Storage of a workspace's identity settings (one JSON document per workspace).

The verification secret is stored sealed (cjo_platform.secret_box, keys from
``CJO_IDENTITY_SECRET_KEYS``): every read opens it and every write of a new one seals it, so
neither the database nor a dump of it holds it in plaintext once a key is configured. A value
written before (or without a key) is the plaintext itself and is read as it is; migration 0009
and ``python -m cjo_identity reseal-secrets`` seal those.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, select
from sqlalchemy.orm import Session

from cjo_identity.adapters.segments import SEGMENTS_REVISION
from cjo_identity.adapters.tables import identity_settings
from cjo_identity.domain.computed import Aggregation, ComputedTrait
from cjo_identity.domain.conversions import ConversionEvent
from cjo_identity.domain.settings import IdentitySettings, Survivorship, TraitRule, TypeRule
from cjo_platform.logging import get_logger
from cjo_platform.secret_box import SecretBox, SecretsUnreadable

log = get_logger(__name__)

# Where the sealed secret is in the settings document; with the workspace id, the associated
# data of its encryption (a sealed secret copied into another workspace does not open there).
SECRET_FIELD = "verification_secret"
SECRET_OWNER = f"identity_settings.{SECRET_FIELD}"


def load_settings(session: Session, workspace_id: str, box: SecretBox, *,
                  for_update: bool = False) -> tuple[IdentitySettings, datetime | None]:
    """The workspace's settings, their verification secret opened with ``box`` (one no key of
    it opens is left empty, with ``verification_secret_error`` saying why: it fails that
    workspace's verification alone)."""
    row = session.execute(_SETTINGS_FOR_UPDATE if for_update else _SETTINGS,
                          {"workspace_id": workspace_id}).first()
    return _opened(workspace_id, row, box)


def load_settings_and_revision(session: Session, workspace_id: str, box: SecretBox
                               ) -> tuple[IdentitySettings, int]:
    """:func:`load_settings` (without their update time) and the workspace's segments'
    revision (see ``segments.load_segments``), in one statement."""
    row = session.execute(_SETTINGS_AND_REVISION, {"workspace_id": workspace_id}).one()
    settings, _ = _opened(workspace_id, row if row.settings is not None else None, box)
    return settings, int(row.segments_revision or 0)


def _opened(workspace_id: str, row: Any, box: SecretBox
            ) -> tuple[IdentitySettings, datetime | None]:
    if row is None:
        return IdentitySettings(), None
    settings = settings_from_json(row.settings)
    stored = str(row.settings.get(SECRET_FIELD, ""))
    try:
        secret, error = box.unseal_text(workspace_id, SECRET_OWNER, stored), ""
    except SecretsUnreadable as exc:
        secret, error = "", str(exc)
    return replace(settings, verification_secret=secret,
                   verification_secret_error=error), row.update_time


def load_rules(session: Session, workspace_id: str) -> IdentitySettings:
    """The workspace's settings WITHOUT the verification secret (left empty, so they fail
    closed if ever used to verify): for the paths that never verify nor save them (erasure,
    consent, time-based recomputes and backfills), which then need no key."""
    row = session.execute(_RULES, {"workspace_id": workspace_id}).first()
    return IdentitySettings() if row is None else settings_from_json(row.settings)


# Read by every ingest transaction (check_unchanged) and every consent check: built once, as a
# statement built per call costs more CPU (its construction and cache key) than the read.
_SETTINGS = select(identity_settings).where(
    identity_settings.c.workspace_id == bindparam("workspace_id", type_=String))
_SETTINGS_FOR_UPDATE = _SETTINGS.with_for_update()
# One row whether or not the workspace saved settings (NULLs: the defaults).
_SETTINGS_AND_REVISION = select(
    select(identity_settings.c.settings)
    .where(identity_settings.c.workspace_id == bindparam("workspace_id", type_=String))
    .scalar_subquery().label("settings"),
    select(identity_settings.c.update_time)
    .where(identity_settings.c.workspace_id == bindparam("workspace_id", type_=String))
    .scalar_subquery().label("update_time"),
    SEGMENTS_REVISION.scalar_subquery().label("segments_revision"))
_RULES = select(identity_settings.c.settings).where(
    identity_settings.c.workspace_id == bindparam("workspace_id", type_=String))


def save_settings(session: Session, workspace_id: str, settings: IdentitySettings,
                  now: datetime, box: SecretBox, *, secret_changed: bool) -> None:
    """Store ``settings``, their verification secret sealed with ``box``. Without
    ``secret_changed`` the stored secret stays byte for byte: an update of other settings never
    re-encrypts it, nor blanks one this process cannot open."""
    document = settings_to_json(settings)
    if secret_changed:
        document[SECRET_FIELD] = box.seal_text(workspace_id, SECRET_OWNER,
                                               settings.verification_secret)
    else:
        current = session.execute(select(identity_settings.c.settings).where(
            identity_settings.c.workspace_id == workspace_id)).scalar_one_or_none()
        document[SECRET_FIELD] = (current or {}).get(SECRET_FIELD, "")
    updated = session.execute(
        identity_settings.update()
        .where(identity_settings.c.workspace_id == workspace_id)
        .values(settings=document, update_time=now))
    if not updated.rowcount:  # type: ignore[attr-defined]
        session.execute(identity_settings.insert().values(
            workspace_id=workspace_id, settings=document, update_time=now))


def reseal_secrets(session: Session, reader: SecretBox, writer: SecretBox) -> tuple[int, int]:
    """Rewrite, as ``writer`` writes it, every verification secret stored otherwise, opening it
    with ``reader``; returns (rewritten, unreadable). Idempotent and safe with several
    replicas (the rows are locked on PostgreSQL, and one already rewritten is left); a secret
    ``reader`` cannot open is left as it is and logged with its workspace, never stopping the
    others. Used by ``reseal-secrets`` and by migration 0009."""
    rows = session.execute(
        select(identity_settings.c.workspace_id, identity_settings.c.settings)
        .order_by(identity_settings.c.workspace_id).with_for_update()).all()
    rewritten = unreadable = 0
    for row in rows:
        stored = str(row.settings.get(SECRET_FIELD, ""))
        if not stored or writer.is_current(stored):
            continue
        try:
            secret = reader.unseal_text(row.workspace_id, SECRET_OWNER, stored)
        except SecretsUnreadable as exc:
            unreadable += 1
            log.error("verification secret cannot be decrypted; the workspace's identity "
                      "verification fails until its key is configured again or a new secret "
                      "is set", workspace=row.workspace_id, error=str(exc))
            continue
        document = {**row.settings,
                    SECRET_FIELD: writer.seal_text(row.workspace_id, SECRET_OWNER, secret)}
        session.execute(identity_settings.update().where(
            identity_settings.c.workspace_id == row.workspace_id).values(settings=document))
        rewritten += 1
    return rewritten, unreadable


def count_not_as_written_by(session: Session, box: SecretBox) -> int:
    """How many workspaces' verification secrets are not in the form ``box`` writes (what a
    key rotation checks before the old key is dropped)."""
    stored = session.execute(select(identity_settings.c.settings)).scalars()
    return sum(1 for document in stored
               if (value := str(document.get(SECRET_FIELD, ""))) and not box.is_current(value))


def settings_to_json(settings: IdentitySettings) -> dict[str, Any]:
    return {
        "default_phone_region": settings.default_phone_region,
        "identifier_types": [{"type": r.type, "limit": r.limit,
                              "blocked_values": list(r.blocked_values)}
                             for r in settings.identifier_types],
        "trait_rules": [{"trait": r.trait, "survivorship": r.survivorship.value,
                         "source_priority": list(r.source_priority)}
                        for r in settings.trait_rules],
        "consent_opt_in": dict(settings.consent_opt_in),
        "computed_traits": [{"name": c.name, "aggregation": c.aggregation.value,
                             "event_name": c.event_name, "property": c.property,
                             "window_s": c.window.total_seconds() if c.window else None}
                            for c in settings.computed_traits],
        "conversion_events": [{"event_name": c.event_name,
                               "revenue_property": c.revenue_property,
                               "currency_property": c.currency_property,
                               "currency": c.currency}
                              for c in settings.conversion_events],
        "verification_required": settings.verification_required,
        # SECRET_FIELD: set by save_settings, sealed.
    }


def settings_from_json(document: dict[str, Any]) -> IdentitySettings:
    return IdentitySettings(
        default_phone_region=document.get("default_phone_region", ""),
        identifier_types=tuple(TypeRule(r["type"], r.get("limit", 0),
                                        tuple(r.get("blocked_values", ())))
                               for r in document.get("identifier_types", ())),
        trait_rules=tuple(TraitRule(r["trait"], Survivorship(r["survivorship"]),
                                    tuple(r.get("source_priority", ())))
                          for r in document.get("trait_rules", ())),
        consent_opt_in=dict(document.get("consent_opt_in", {})),
        computed_traits=tuple(
            ComputedTrait(c["name"], Aggregation(c["aggregation"]), c["event_name"],
                          c.get("property", ""),
                          timedelta(seconds=c["window_s"]) if c.get("window_s") else None)
            for c in document.get("computed_traits", ())),
        conversion_events=tuple(
            ConversionEvent(c["event_name"], c.get("revenue_property", ""),
                            c.get("currency_property", ""), c.get("currency", ""))
            for c in document.get("conversion_events", ())),
        verification_required=bool(document.get("verification_required", False)),
        # The verification secret: opened by load_settings.
    )
