"""A workspace's identity settings: identifier rules, survivorship, consent defaults, computed
traits and conversion events. Ingest parses a call's events with them (from
:class:`SettingsCache`) and checks them again inside its write transaction."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from cjo_identity.adapters import settings as stored
from cjo_identity.domain.backfills import Backfill
from cjo_identity.domain.settings import IdentitySettings, keep_secret
from cjo_identity.service_layer import backfills
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.secret_box import Sealed, SecretBox

log = get_logger(__name__)

# Workspaces whose settings one process keeps (the least recently used go first).
CACHED_WORKSPACES = 10_000


def get_settings(uow: UnitOfWork, workspace_id: str, box: SecretBox
                 ) -> tuple[IdentitySettings, datetime | None]:
    """The workspace's settings (the defaults until it saved any) and when they last changed;
    their verification secret opened with ``box``."""
    return stored.load_settings(uow.session, workspace_id, box)


def get_settings_and_backfill(uow: UnitOfWork, workspace_id: str, box: SecretBox
                              ) -> tuple[IdentitySettings, datetime | None, Backfill | None]:
    """The settings, when they last changed, and the backfill of their computed traits."""
    current, update_time = stored.load_settings(uow.session, workspace_id, box)
    return current, update_time, backfills.computed_backfill(uow, workspace_id)


def update_settings(uow: UnitOfWork, workspace_id: str, settings: IdentitySettings,
                    box: SecretBox) -> tuple[datetime, Backfill | None]:
    """Replace the workspace's settings (already validated; an empty verification secret keeps
    the current one, see ``keep_secret``); when the computed traits changed,
    every profile is recomputed in the background (a backfill is recorded). Returns their
    update time and the computed traits' backfill. A new secret is sealed with ``box``; a kept
    one stays as it is stored."""
    now = uow.now()
    old = stored.load_settings(uow.session, workspace_id, box, for_update=True)[0]
    secret_changed = bool(settings.verification_secret)
    settings = keep_secret(settings, old)
    stored.save_settings(uow.session, workspace_id, settings, now, box,
                         secret_changed=secret_changed)
    backfills.start_computed(uow, workspace_id, old, settings)
    return now, backfills.computed_backfill(uow, workspace_id)


class SettingsChanged(Exception):
    """The settings a batch was parsed with are no longer the stored ones (they changed since
    they were cached): parse it again with ``current`` (nothing was written)."""

    def __init__(self, workspace_id: str, current: IdentitySettings) -> None:
        super().__init__(workspace_id)
        self.workspace_id = workspace_id
        self.current = current


def check_unchanged(uow: UnitOfWork, workspace_id: str, expected: IdentitySettings,
                    box: SecretBox) -> int:
    """Raise :class:`SettingsChanged` unless ``expected`` are the stored settings: read in the
    write transaction, so a batch is never written under settings older than its commit (a
    rotated verification secret or a removed identifier type is never honoured late).
    Returns the workspace's segments' revision, read with them (the segments this process
    keeps are used at that revision only)."""
    current, segments_revision = stored.load_settings_and_revision(
        uow.session, workspace_id, box)
    if current != expected:
        raise SettingsChanged(workspace_id, current)
    return segments_revision


@dataclass(frozen=True)
class Cached:
    """A workspace's settings as this process loaded them; ``revision`` tells two loads apart
    (calls parsed with the same revision may share a write transaction)."""

    settings: IdentitySettings
    revision: int


class SettingsCache:
    """The settings ingest parses events with, kept in the process instead of read in a
    transaction of their own per call.

    Never trusted blindly: the write transaction reads them again (:func:`check_unchanged`)
    and a call whose events were parsed with outdated settings is parsed again with the
    stored ones, so a change (on any replica) holds from the first call that commits after it.
    A call that refuses an event asks the database again before answering (see
    ``IdentityServicer.IngestEvents``), so a newly allowed identifier type is not refused on
    old settings either."""

    def __init__(self, transactions: Transactions, box: SecretBox,
                 max_workspaces: int = CACHED_WORKSPACES) -> None:
        self._transactions = transactions
        self._box = box
        self._max = max_workspaces
        self._entries: OrderedDict[str, Cached] = OrderedDict()
        self._revisions = itertools.count(1)

    def cached(self, workspace_id: str) -> Cached | None:
        """The workspace's settings as last loaded here, if they still are in the cache."""
        hit = self._entries.get(workspace_id)
        if hit is not None:
            self._entries.move_to_end(workspace_id)
        return hit

    async def load(self, workspace_id: str) -> Cached:
        """The workspace's settings read from the database (and cached)."""
        current, _ = await self._transactions.run(
            lambda uow: get_settings(uow, workspace_id, self._box))
        return self.put(workspace_id, current)

    def put(self, workspace_id: str, settings: IdentitySettings) -> Cached:
        """Cache ``settings`` (just read from the database) as the workspace's."""
        held = self._entries.get(workspace_id)
        if held is not None and held.settings == settings:
            self._entries.move_to_end(workspace_id)
            return held
        if settings.verification_secret_error:
            # Once per load, not per call: its publishable keys' verified events fail.
            log.error("verification secret cannot be decrypted; the workspace's identity "
                      "verification fails until its key is configured again or a new secret "
                      "is set", workspace=workspace_id, error=settings.verification_secret_error)
        entry = self._entries[workspace_id] = Cached(settings, next(self._revisions))
        self._entries.move_to_end(workspace_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return entry

    def forget(self, workspace_id: str) -> None:
        """Drop the workspace's settings (this process changed them)."""
        self._entries.pop(workspace_id, None)


def reseal(uow: UnitOfWork, reader: SecretBox, writer: SecretBox) -> tuple[int, int]:
    """Rewrite every verification secret as ``writer`` writes it; (rewritten, unreadable)."""
    return stored.reseal_secrets(uow.session, reader, writer)


def count_left(uow: UnitOfWork, writer: SecretBox) -> int:
    """How many verification secrets are stored in another form than ``writer``'s."""
    return stored.count_not_as_written_by(uow.session, writer)


# For `python -m cjo_identity reseal-secrets` (cjo_platform.secret_box.reseal_command).
SEALED = Sealed("verification secrets", "identity", reseal, count_left)
