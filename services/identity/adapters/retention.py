"""Identity's retention kinds (cjo_platform.db.retention), besides the request log and dead
letters every service has."""

from __future__ import annotations

from cjo_identity.adapters.tables import events, events_removable
from cjo_platform.db.retention import Rule

# Kept forever by default: computed traits, segment rules, journey backfills and analytics
# replays read a profile's whole history, and deleting events would silently change what they
# answer. An operator who sets a limit accepts that only that much history counts. Events with
# traits and consent events stay whatever their age (tables.events_removable): a split refolds
# the records involved from their stored events, and without them a person lost their traits
# and their unsubscribes.
EVENTS_DAYS = 0

RULES = [
    Rule("events", events, events.c.receive_time, EVENTS_DAYS, events_removable,
         indexed=events_removable,  # ix_events_removable: a pass never walks the kept ones
         description="stored events without traits and not consent, by the time identity "
                     "received them"),
]
