"""Storage of a workspace's identity settings (one JSON document per workspace)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cjo_identity.adapters.tables import identity_settings
from cjo_identity.domain.computed import Aggregation, ComputedTrait
from cjo_identity.domain.conversions import ConversionEvent
from cjo_identity.domain.settings import IdentitySettings, Survivorship, TraitRule, TypeRule


def load_settings(session: Session, workspace_id: str, *, for_update: bool = False
                  ) -> tuple[IdentitySettings, datetime | None]:
    query = select(identity_settings).where(identity_settings.c.workspace_id == workspace_id)
    row = session.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        return IdentitySettings(), None
    return settings_from_json(row.settings), row.update_time


def save_settings(session: Session, workspace_id: str, settings: IdentitySettings,
                  now: datetime) -> None:
    document = settings_to_json(settings)
    updated = session.execute(
        identity_settings.update()
        .where(identity_settings.c.workspace_id == workspace_id)
        .values(settings=document, update_time=now))
    if not updated.rowcount:  # type: ignore[attr-defined]
        session.execute(identity_settings.insert().values(
            workspace_id=workspace_id, settings=document, update_time=now))


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
        "verification_secret": settings.verification_secret,
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
        verification_secret=str(document.get("verification_secret", "")),
    )
