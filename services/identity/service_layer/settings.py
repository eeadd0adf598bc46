"""A workspace's identity settings: identifier rules, survivorship, consent defaults, computed
traits and conversion events. Ingest reads them before it parses a batch."""

from __future__ import annotations

from datetime import datetime

from cjo_identity.adapters import settings as stored
from cjo_identity.domain.backfills import Backfill
from cjo_identity.domain.settings import IdentitySettings, keep_secret
from cjo_identity.service_layer import backfills
from cjo_platform.db.unit_of_work import UnitOfWork


def get_settings(uow: UnitOfWork, workspace_id: str
                 ) -> tuple[IdentitySettings, datetime | None]:
    """The workspace's settings (the defaults until it saved any) and when they last changed."""
    return stored.load_settings(uow.session, workspace_id)


def get_settings_and_backfill(uow: UnitOfWork, workspace_id: str
                              ) -> tuple[IdentitySettings, datetime | None, Backfill | None]:
    """The settings, when they last changed, and the backfill of their computed traits."""
    current, update_time = stored.load_settings(uow.session, workspace_id)
    return current, update_time, backfills.computed_backfill(uow, workspace_id)


def update_settings(uow: UnitOfWork, workspace_id: str, settings: IdentitySettings
                    ) -> tuple[datetime, Backfill | None]:
    """Replace the workspace's settings (already validated; an empty verification secret keeps
    the current one, see ``keep_secret``); when the computed traits changed,
    every profile is recomputed in the background (a backfill is recorded). Returns their
    update time and the computed traits' backfill."""
    now = uow.now()
    old = stored.load_settings(uow.session, workspace_id, for_update=True)[0]
    settings = keep_secret(settings, old)
    stored.save_settings(uow.session, workspace_id, settings, now)
    backfills.start_computed(uow, workspace_id, old, settings)
    return now, backfills.computed_backfill(uow, workspace_id)
