"""A workspace's identity settings: identifier rules, survivorship, consent defaults, computed
traits and conversion events. Ingest reads them before it parses a batch."""

from __future__ import annotations

from datetime import datetime

from cjo_identity.adapters import settings as stored
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.db.unit_of_work import UnitOfWork


def get_settings(uow: UnitOfWork, workspace_id: str
                 ) -> tuple[IdentitySettings, datetime | None]:
    """The workspace's settings (the defaults until it saved any) and when they last changed."""
    return stored.load_settings(uow.session, workspace_id)


def update_settings(uow: UnitOfWork, workspace_id: str, settings: IdentitySettings) -> datetime:
    """Replace the workspace's settings (already validated); returns their update time."""
    now = uow.now()
    stored.save_settings(uow.session, workspace_id, settings, now)
    return now
