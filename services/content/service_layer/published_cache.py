"""What a render reads before it renders (the items' latest published versions, their
fingerprints and the workspace's default locale), kept in the process between renders, so a
journey step's render reads nothing from the database.

Correct across replicas through signals (cjo_platform.db.signals: LISTEN/NOTIFY on
PostgreSQL, in-process on SQLite, where one process serves a database): every use-case that
changes what a render reads (publish, roll back, delete an item, change the settings) calls
:meth:`PublishedCache.changed` in its unit of work, which signals the workspace after the
commit; each replica forgets that workspace when it hears it. In the process that wrote, the
signal is handled before the writing call answers; another replica hears it a few
milliseconds later. A notification can be lost (the listening connection broke; a NOTIFY
failed after the commit), so the cache is used only while the signals' connection listens,
everything is forgotten when it (re)connects, and a workspace's entry is read again at the
latest ``max_age`` after it was read: the bound on staleness when a signal is lost.

Why signals and not a revision check per render: a check is still a transaction, a thread
hop and a statement per call, which is what a lone render spends most of its CPU on.

All methods run on the event loop (the signals' handlers do too): no lock is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cjo_platform.clock import Clock
from cjo_platform.db.signals import Signals
from cjo_platform.db.unit_of_work import UnitOfWork

CHANGED_SIGNAL = "content.published_changed"


@dataclass
class _Workspace:
    locale: str
    expires: datetime
    # item key -> (latest published version, 0 if never published; its fingerprint, "" if 0)
    items: dict[str, tuple[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Known:
    """What the cache knows for every item a render asked for."""

    latest: dict[str, int]
    fingerprints: dict[tuple[str, int], str]
    locale: str


class PublishedCache:
    """The latest published versions of items, per workspace (see the module docstring)."""

    def __init__(self, signals: Signals, clock: Clock, *, max_age: timedelta,
                 max_workspaces: int = 1024) -> None:
        self.signals = signals
        self.clock = clock
        self.max_age = max_age
        self.max_workspaces = max_workspaces
        self._workspaces: OrderedDict[str, _Workspace] = OrderedDict()
        # Bumped by every change heard: a read that began before it may hold what the change
        # replaced, so it is not kept.
        self.generation = 0
        signals.on(CHANGED_SIGNAL, self._heard)

    def changed(self, uow: UnitOfWork, workspace_id: str) -> None:
        """What renders read in ``workspace_id`` changes when ``uow`` commits."""
        self.signals.send(uow, CHANGED_SIGNAL, workspace_id)

    def _heard(self, workspace_id: str | None) -> None:
        self.generation += 1
        if workspace_id is None:  # (re)connected: anything may have been missed
            self._workspaces.clear()
        else:
            self._workspaces.pop(workspace_id, None)

    def known(self, workspace_id: str, keys: Collection[str]) -> Known | None:
        """What renders of ``keys`` need, if the cache holds all of it."""
        if not self.signals.listening.is_set():
            self._workspaces.clear()  # signals may be missed while nobody listens
            return None
        entry = self._workspaces.get(workspace_id)
        if entry is None:
            return None
        if self.clock.now() >= entry.expires:
            del self._workspaces[workspace_id]
            return None
        items = entry.items
        if not all(key in items for key in keys):
            return None
        latest = {key: items[key][0] for key in keys}
        return Known(latest, {(key, v): items[key][1] for key, v in latest.items() if v},
                     entry.locale)

    def keep(self, workspace_id: str, generation: int, latest: dict[str, int],
             fingerprints: dict[tuple[str, int], str], locale: str) -> None:
        """Keep what a read that began at ``generation`` found (unless a change was heard
        since): each item's latest version and that version's fingerprint."""
        if generation != self.generation or not self.signals.listening.is_set():
            return
        entry = self._workspaces.get(workspace_id)
        if entry is None or entry.locale != locale:
            entry = _Workspace(locale, self.clock.now() + self.max_age)
            self._workspaces[workspace_id] = entry
            while len(self._workspaces) > self.max_workspaces:
                self._workspaces.popitem(last=False)
        for key, version in latest.items():
            if not version:
                entry.items[key] = (0, "")
            elif (key, version) in fingerprints:
                entry.items[key] = (version, fingerprints[(key, version)])
