"""How often a service process runs Python's cyclic garbage collector.

At the default threshold (a young collection every 700 container objects allocated and not yet
freed) a hot path that builds many short-lived containers (rows, dataclasses, protobuf messages,
dicts per item) pays for frequent collections that find almost nothing: nothing on these paths
builds reference cycles worth collecting early, reference counting frees the rest. Measured:
decisioning's BatchDecide of 100 ran the collector some forty times a call, a fifth of its CPU
(issue 14); orchestration's step rounds spent 13% of the process's CPU in it while firing due
timers (1.21 s of 9.25 s for 20,000 timers, 1,296 young and 11 full collections; 0.014 s and one
young collection at this threshold); delivery's BatchSendMessages and send rounds 15% (1.6-1.7 s
of 10.4-11.5 s for 20,000 messages; 0.08 s); identity's CPU per ingested event and per
single-event call fell by 13-20% (``make bench-throughput --profile``, 2026-12-06). Every service
process sets it at start-up (:func:`cjo_platform.rpc.server.main`; content too, where it is
worth ~2%). Cyclic garbage still goes, once 50,000 objects are pending.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 50_000


def collect_rarely() -> None:
    """Collect young objects every :data:`YOUNG_COLLECTION_THRESHOLD` allocations (the older
    generations at 20 times each, as before proportionally rarer). Call once at start-up."""
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, 20, 20)
