"""Errors of journeys' definitions, counted where a user sees them: each round adds up what its
items ran into per journey and writes it with one statement, in the round's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.domain.events import JourneyError
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.logging import get_logger

log = get_logger(__name__)


def count_errors(uow: UnitOfWork, errors: Iterable[JourneyError]) -> None:
    """Add ``errors`` to their journeys' error counts; the last of each journey becomes its
    ``last_error``."""
    counted: dict[tuple[str, str], tuple[int, str]] = {}
    for error in errors:
        key = (error.workspace_id, error.journey_id)
        count, _ = counted.get(key, (0, ""))
        counted[key] = (count + 1, error.detail)
    if not counted:
        return
    journey_store.record_errors(uow.session, counted, uow.now())
    for (workspace_id, journey_id), (count, detail) in counted.items():
        uow.after_commit(partial(  # logged once, for the attempt that committed
            log.warning, "journey definition failed for some items; they recorded the error",
            workspace=workspace_id, journey_id=journey_id, errors=count, last_error=detail))
