"""Journey use-cases: create and edit drafts, publish them as frozen versions, pause, resume
and archive, read them. A published version's schedule (scheduled triggers) follows every
change of state here, in the same transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters import schedules as schedule_store
from cjo_orchestration.adapters.peers import DecisioningCatalog
from cjo_orchestration.domain import journeys as domain
from cjo_orchestration.domain.decisions import split_points
from cjo_orchestration.domain.graph import validate_for_publish, validate_shape
from cjo_orchestration.domain.journeys import Journey, JourneyChanges, JourneyGraph
from cjo_platform.content_catalog import ContentCatalog
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import Aborted, FieldViolation, InvalidArgument, Violations


def _check_shape(display_name: str, graph: JourneyGraph) -> None:
    problems: Violations = validate_shape(display_name, graph)
    if problems:
        raise InvalidArgument([FieldViolation(f"journey.{v.field}", v.description)
                               for v in problems.items])


def create(uow: UnitOfWork, workspace_id: str, journey_id: str, display_name: str,
           graph: JourneyGraph) -> Journey:
    """A new draft journey."""
    _check_shape(display_name, graph)
    now = uow.now()
    journey = Journey(workspace_id=workspace_id, journey_id=journey_id,
                      display_name=display_name, state=domain.JourneyState.DRAFT, graph=graph,
                      published_version=0, revision=1, create_time=now, update_time=now)
    journey_store.insert(uow.session, journey)
    return journey


def with_unpublished_changes(uow: UnitOfWork, found: list[Journey]) -> list[Journey]:
    """``found``, each with ``unpublished_changes`` worked out: its draft compared with its
    latest version (one query for them all). A version that no longer reads counts as
    different, so a deploy publishes the draft again. (Journeys read for a caller come with it
    from journey_store.read and .page.)"""
    keys = [(j.workspace_id, j.journey_id, j.published_version)
            for j in found if j.published_version]
    published = journey_store.versions(uow.session, keys)
    return [replace(j, unpublished_changes=published.get(
        (j.workspace_id, j.journey_id, j.published_version)) != j.graph) for j in found]


def get(uow: UnitOfWork, workspace_id: str, journey_id: str) -> Journey:
    return journey_store.read(uow.session, workspace_id, journey_id)


def list_journeys(uow: UnitOfWork, workspace_id: str, size: int,
                  after: tuple[datetime, str] | None) -> tuple[list[Journey], bool]:
    """Up to ``size`` journeys, oldest first, after the (create_time, journey_id) cursor; and
    whether more follow."""
    found = journey_store.page(uow.session, workspace_id, size + 1, after)
    return found[:size], len(found) > size


def update(uow: UnitOfWork, workspace_id: str, journey_id: str, changes: JourneyChanges,
           etag: str) -> Journey:
    """Change the draft (a stale ``etag`` is refused); published versions stay as they are."""
    current = journey_store.get(uow.session, workspace_id, journey_id, for_update=True)
    changed = domain.apply_changes(current, changes, etag, uow.now())
    _check_shape(changed.display_name, changed.graph)
    journey_store.save(uow.session, changed)
    return with_unpublished_changes(uow, [changed])[0]


async def missing_content(transactions: Transactions, catalog: ContentCatalog | None,
                          workspace_id: str, journey_id: str) -> set[str]:
    """The content keys the journey's draft sends that content does not know (asked outside
    any transaction: publishing must not hold a lock while a peer answers)."""
    if catalog is None:
        return set()
    draft = await transactions.run(lambda uow: get(uow, workspace_id, journey_id))
    keys = {n.action.content_key for n in draft.graph.nodes
            if isinstance(n.action, domain.SendAction) and n.action.content_key}
    return set(await catalog.missing(workspace_id, keys))


def _check_publishable(journey: Journey, missing_content: set[str], now: datetime) -> None:
    domain.ensure_editable(journey, "published")  # before listing problems
    problems = validate_for_publish(journey.display_name, journey.graph, missing_content, now)
    if problems:
        raise InvalidArgument(
            problems.items, reason="JOURNEY_NOT_PUBLISHABLE",
            message=f"journey {journey.journey_id} cannot be published: "
                    + "; ".join(f"{v.field}: {v.description}" for v in problems.items))


async def prepare_decisioning(transactions: Transactions, catalog: DecisioningCatalog | None,
                              workspace_id: str, journey_id: str,
                              missing_content: set[str]) -> int | None:
    """Create or update in decisioning the decision points of the draft's optimising splits,
    before its version is written (outside any transaction: no lock is held while decisioning
    answers). Only a publishable draft gets that far, and decisioning unreachable is
    UNAVAILABLE before anything is published. Returns the draft's revision the points were made
    for (publish refuses a draft changed since), or None when it has no optimising split."""
    draft = await transactions.run(lambda uow: get(uow, workspace_id, journey_id))
    if not any(isinstance(n.action, domain.SplitAction) and n.action.optimize
               for n in draft.graph.nodes):
        return None
    _check_publishable(draft, missing_content, transactions.clock.now())
    points = split_points(journey_id, draft.display_name, draft.graph)
    if catalog is None:
        raise InvalidArgument.one("journey.nodes", "optimising splits need decisioning, which "
                                                   "this server is not configured to reach")
    await catalog.upsert(workspace_id, points)
    return draft.revision


def publish(uow: UnitOfWork, workspace_id: str, journey_id: str,
            missing_content: set[str], revision: int | None = None) -> Journey:
    """Freeze the draft as the next version, which the journey then enrolls on; refused with
    every problem listed (``missing_content`` among them) when the draft cannot run. With
    ``revision`` (the draft decisioning's points were made for), a draft changed since is
    refused (ABORTED: publish again)."""
    current = journey_store.get(uow.session, workspace_id, journey_id, for_update=True)
    now = uow.now()
    _check_publishable(current, missing_content, now)
    if revision is not None and current.revision != revision:
        raise Aborted(f"journey {journey_id} changed while its optimising splits were set up "
                      "in decisioning; publish it again")
    published, version = domain.publish(current, now)
    journey_store.save(uow.session, published)
    journey_store.add_version(uow.session, version)
    schedule_store.after_publish(uow.session, version, now)
    return published


def _change_state(uow: UnitOfWork, workspace_id: str, journey_id: str,
                  change: Callable[[Journey, datetime], Journey]) -> Journey:
    current = journey_store.get(uow.session, workspace_id, journey_id, for_update=True)
    now = uow.now()
    changed = change(current, now)
    if changed is current:  # already in that state: nothing to write
        return with_unpublished_changes(uow, [changed])[0]
    journey_store.save(uow.session, changed)
    graph = None
    if changed.state is domain.JourneyState.ACTIVE:
        version = (workspace_id, journey_id, changed.published_version)
        graph = journey_store.versions(uow.session, [version]).get(version)
    schedule_store.after_lifecycle(uow.session, changed, graph, now)
    return with_unpublished_changes(uow, [changed])[0]


def pause(uow: UnitOfWork, workspace_id: str, journey_id: str) -> Journey:
    """Stop enrolling new profiles until resumed. Enrollments in flight keep walking: their
    steps (sends among them) run as before."""
    return _change_state(uow, workspace_id, journey_id, domain.pause)


def resume(uow: UnitOfWork, workspace_id: str, journey_id: str) -> Journey:
    """Enroll again; scheduled occurrences that came due while paused are skipped."""
    return _change_state(uow, workspace_id, journey_id, domain.resume)


def archive(uow: UnitOfWork, workspace_id: str, journey_id: str) -> Journey:
    """Freeze the journey for good; its schedule ends."""
    return _change_state(uow, workspace_id, journey_id, domain.archive)
