"""DecisioningService: each RPC turns its request into domain inputs, runs one use-case and
turns the result into its reply."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from cjo.decisioning.v1 import decision_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as pb_grpc
from cjo_decisioning.adapters.identity import Profile, ProfileBook
from cjo_decisioning.api import convert
from cjo_decisioning.api.convert import (
    ReplyCache,
    action_from_proto,
    action_to_proto,
    context_from_proto,
    decision_to_proto,
    fill_decision,
    key_from_name,
    point_from_proto,
    point_to_proto,
)
from cjo_decisioning.api.outcomes import OutcomeRpcs
from cjo_decisioning.domain.catalogue import (
    ACTION_MASK,
    MAX_CONTEXT_TIME_SKEW,
    POINT_MASK,
    Action,
    check_action,
    check_action_key,
    check_point_key,
    content_not_found,
    parse_mask,
)
from cjo_decisioning.service_layer import catalogue, evaluation, exposures, people, reports
from cjo_decisioning.service_layer.decide import (
    DecideItem,
    Decision,
    DecisionContext,
    Engine,
    check_context,
    decide_batch,
    get_decision,
    profile_of,
    replayed_requests,
)
from cjo_platform.content_catalog import ContentCatalog
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import CjoError, InvalidArgument, Violations
from cjo_platform.limits import (
    MAX_PROFILE_ID_LENGTH,
    check_id,
    describe,
)
from cjo_platform.paging import cursor_value, next_page_token, page_size
from cjo_platform.protobuf import from_timestamp, struct_to_dict
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.batch import BatchAnswer
from cjo_platform.rpc.idempotent import once

DOMAIN = "decisioning.cjo"
SERVICE = "cjo.decisioning.v1.DecisioningService"
# Called by other cjo services only (identity's events and their watermark, delivery's
# message facts).
SERVICE_ONLY_METHODS = {f"/{SERVICE}/RecordEvents", f"/{SERVICE}/RecordMessageFacts",
                        f"/{SERVICE}/RecordForwardingWatermark"}
ACTIONS, POINTS = "actions/", "decisionPoints/"

R = TypeVar("R", bound=Message)


def within(prefix: str, work: Callable[[UnitOfWork], R]) -> Callable[[UnitOfWork], R]:
    """``work`` with its field violations named from the request field ``prefix`` (use-cases
    name fields of the resource they change)."""
    def run(uow: UnitOfWork) -> R:
        try:
            return work(uow)
        except InvalidArgument as exc:
            raise exc.within(prefix) from None
    return run


class DecisioningServicer(OutcomeRpcs, pb_grpc.DecisioningServiceServicer):
    """The RPCs, grouped by resource; helpers add theirs the same way: parse, run one
    use-case in ``self.transactions`` (``once`` for mutating ones), convert."""

    def __init__(self, transactions: Transactions, content: ContentCatalog,
                 profiles: ProfileBook, engine: Engine) -> None:
        self.transactions = transactions
        self.content = content
        self.profiles = profiles
        self.engine = engine

    async def _check_contents(self, workspace_id: str, action: Action) -> None:
        missing = await self.content.missing(
            workspace_id, [c.content_key for c in action.contents if c.content_key])
        if missing:
            raise content_not_found(missing[0])

    # --- actions ---------------------------------------------------------------------------

    async def CreateAction(self, request: pb.CreateActionRequest,
                           context: grpc.aio.ServicerContext) -> pb.CreateActionResponse:
        workspace = current_workspace()
        action = action_from_proto(request.action)
        try:
            check_action(action).raise_if_any()  # before asking content about its keys
        except InvalidArgument as exc:
            raise exc.within("action") from None
        await self._check_contents(workspace, action)
        return await once(
            self.transactions, request, pb.CreateActionResponse,
            within("action", lambda uow: pb.CreateActionResponse(
                action=action_to_proto(catalogue.create_action(uow, workspace, action)))))

    async def GetAction(self, request: pb.GetActionRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetActionResponse:
        key = key_from_name(request.name, ACTIONS)
        workspace = current_workspace()
        stored = await self.transactions.run(
            lambda uow: catalogue.get_action(uow, workspace, key))
        return pb.GetActionResponse(action=action_to_proto(stored))

    async def ListActions(self, request: pb.ListActionsRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListActionsResponse:
        size, after = page_size(request.page_size), cursor_value(request.page_token, "after", str)
        workspace = current_workspace()
        found, last = await self.transactions.run(
            lambda uow: catalogue.page_actions(uow, workspace, after, size))
        return pb.ListActionsResponse(actions=[action_to_proto(a) for a in found],
                                      next_page_token=next_page_token("after", last))

    async def UpdateAction(self, request: pb.UpdateActionRequest,
                           context: grpc.aio.ServicerContext) -> pb.UpdateActionResponse:
        workspace = current_workspace()
        key = key_from_name(request.action.name, ACTIONS, "action.name")
        check_action_key(key, "action.name")
        mask = parse_mask(request.update_mask.paths, ACTION_MASK)
        patch = action_from_proto(request.action, key)
        if "contents" in mask or request.allow_missing:
            await self._check_contents(workspace, patch)
        etag = request.action.etag
        return await once(
            self.transactions, request, pb.UpdateActionResponse,
            within("action", lambda uow: pb.UpdateActionResponse(action=action_to_proto(
                catalogue.update_action(uow, workspace, patch, mask, etag,
                                        request.allow_missing)))))

    async def DeleteAction(self, request: pb.DeleteActionRequest,
                           context: grpc.aio.ServicerContext) -> pb.DeleteActionResponse:
        workspace = current_workspace()
        key = key_from_name(request.name, ACTIONS)

        def delete(uow: UnitOfWork) -> pb.DeleteActionResponse:
            catalogue.delete_action(uow, workspace, key, request.etag)
            return pb.DeleteActionResponse()

        return await once(self.transactions, request, pb.DeleteActionResponse, delete)

    # --- decision points -------------------------------------------------------------------

    async def CreateDecisionPoint(self, request: pb.CreateDecisionPointRequest,
                                  context: grpc.aio.ServicerContext,
                                  ) -> pb.CreateDecisionPointResponse:
        workspace = current_workspace()
        point = point_from_proto(request.decision_point)
        return await once(
            self.transactions, request, pb.CreateDecisionPointResponse,
            within("decision_point", lambda uow: pb.CreateDecisionPointResponse(
                decision_point=point_to_proto(catalogue.create_point(uow, workspace, point)))))

    async def GetDecisionPoint(self, request: pb.GetDecisionPointRequest,
                               context: grpc.aio.ServicerContext,
                               ) -> pb.GetDecisionPointResponse:
        key = key_from_name(request.name, POINTS)
        workspace = current_workspace()
        stored = await self.transactions.run(lambda uow: catalogue.get_point(uow, workspace, key))
        return pb.GetDecisionPointResponse(decision_point=point_to_proto(stored))

    async def ListDecisionPoints(self, request: pb.ListDecisionPointsRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> pb.ListDecisionPointsResponse:
        size, after = page_size(request.page_size), cursor_value(request.page_token, "after", str)
        workspace = current_workspace()
        found, last = await self.transactions.run(
            lambda uow: catalogue.page_points(uow, workspace, after, size))
        return pb.ListDecisionPointsResponse(decision_points=[point_to_proto(p) for p in found],
                                             next_page_token=next_page_token("after", last))

    async def UpdateDecisionPoint(self, request: pb.UpdateDecisionPointRequest,
                                  context: grpc.aio.ServicerContext,
                                  ) -> pb.UpdateDecisionPointResponse:
        workspace = current_workspace()
        key = key_from_name(request.decision_point.name, POINTS, "decision_point.name")
        check_point_key(key, "decision_point.name")
        mask = parse_mask(request.update_mask.paths, POINT_MASK)
        patch = point_from_proto(request.decision_point, key)
        etag = request.decision_point.etag
        return await once(
            self.transactions, request, pb.UpdateDecisionPointResponse,
            within("decision_point", lambda uow: pb.UpdateDecisionPointResponse(
                decision_point=point_to_proto(catalogue.update_point(
                    uow, workspace, patch, mask, etag, request.allow_missing)))))

    async def DeleteDecisionPoint(self, request: pb.DeleteDecisionPointRequest,
                                  context: grpc.aio.ServicerContext,
                                  ) -> pb.DeleteDecisionPointResponse:
        workspace = current_workspace()
        key = key_from_name(request.name, POINTS)

        def delete(uow: UnitOfWork) -> pb.DeleteDecisionPointResponse:
            catalogue.delete_point(uow, workspace, key, request.etag)
            return pb.DeleteDecisionPointResponse()

        return await once(self.transactions, request, pb.DeleteDecisionPointResponse, delete)

    # --- evaluation and reports ----------------------------------------------------------------

    async def EvaluatePolicy(self, request: pb.EvaluatePolicyRequest,
                             context: grpc.aio.ServicerContext) -> pb.EvaluatePolicyResponse:
        query = convert.evaluation_query(request)
        result = await evaluation.evaluate_policy(self.transactions, current_workspace(), query)
        return convert.evaluation_reply(result)

    async def GetDecisionReport(self, request: pb.GetDecisionReportRequest,
                                context: grpc.aio.ServicerContext
                                ) -> pb.GetDecisionReportResponse:
        query = convert.report_query(request)
        workspace = current_workspace()
        report = await self.transactions.run(
            lambda uow: reports.decision_point_report(uow, workspace, query))
        return convert.report_reply(report)

    # --- decisions -------------------------------------------------------------------------

    async def _decide(self, workspace: str, point: str,
                      requests: Sequence[tuple[int, DecideRequestItem]],
                      ) -> list[tuple[int, Decision | CjoError]]:
        """Decisions for parsed items (index, item): profiles read from identity in one call
        for the items that carry none; an unknown profile fails only its item."""
        asked = [(index, item) for index, item in requests if item.profile is None]
        with_ids = {item.request_id for _, item in asked if item.request_id}
        if with_ids:
            # A repeat gets its first decision without asking identity again (the person may
            # have been erased or merged since).
            replayed = await self.transactions.run(
                lambda uow: replayed_requests(uow, workspace, point, with_ids))
            requests = [(index, replace(item, profile={}) if item.request_id in replayed
                         else item) for index, item in requests]
            asked = [(index, item) for index, item in requests if item.profile is None]
        answers = await self.profiles.profiles(workspace, [item.profile_id for _, item in asked])
        looked_up: dict[int, Profile | CjoError] = {
            index: answer for (index, _), answer in zip(asked, answers, strict=True)}
        outcomes: dict[int, Decision | CjoError] = {}
        ready: list[tuple[int, DecideItem]] = []
        for index, item in requests:
            if item.profile is not None:
                ready.append((index, DecideItem(item.profile_id, profile_of(item.profile),
                                                item.context, item.request_id)))
                continue
            found = looked_up[index]
            if isinstance(found, CjoError):
                outcomes[index] = found
            else:
                ready.append((index, DecideItem(found.profile_id, found.view, item.context,
                                                item.request_id)))
        if ready:
            decided = await self.transactions.run(lambda uow: decide_batch(
                uow, workspace, point, [item for _, item in ready], self.engine))
            outcomes.update(zip([index for index, _ in ready], decided, strict=True))
        return [(index, outcomes[index]) for index, _ in requests]

    async def Decide(self, request: pb.DecideRequest,
                     context: grpc.aio.ServicerContext) -> pb.DecideResponse:
        workspace = current_workspace()
        point = key_from_name(request.decision_point, POINTS, "decision_point")
        item = _item(request.profile_id, request.profile if request.HasField("profile") else None,
                     request.context, request.request_id, self.transactions.clock.now())
        [(_, outcome)] = await self._decide(workspace, point, [(0, item)])
        if isinstance(outcome, CjoError):
            raise outcome
        return pb.DecideResponse(decision=decision_to_proto(outcome))

    async def BatchDecide(self, request: pb.BatchDecideRequest,
                          context: grpc.aio.ServicerContext) -> pb.BatchDecideResponse:
        workspace = current_workspace()
        point = key_from_name(request.decision_point, POINTS, "decision_point")
        shared = _SharedContext(request.context)
        now = self.transactions.clock.now()
        if request.HasField("context"):
            _check_shared(shared.get(), now)
        answer = BatchAnswer(request.items, "items", DOMAIN, pb.DecideResult)
        parsed = answer.parse(lambda item: _item(
            item.profile_id, item.profile if item.HasField("profile") else None,
            item.context if item.HasField("context") else shared, item.request_id, now))
        cache = ReplyCache()
        for index, outcome in await self._decide(workspace, point, parsed):
            if isinstance(outcome, CjoError):
                answer.fail(index, outcome)
            else:
                fill_decision(answer.results[index].decision, outcome, cache)
        return pb.BatchDecideResponse(results=answer.results)

    async def GetDecision(self, request: pb.GetDecisionRequest,
                          context: grpc.aio.ServicerContext) -> pb.GetDecisionResponse:
        decision_id = key_from_name(request.name, "decisions/")
        workspace = current_workspace()
        found = await self.transactions.run(
            lambda uow: get_decision(uow, workspace, decision_id))
        return pb.GetDecisionResponse(decision=decision_to_proto(found))

    async def ListDecisions(self, request: pb.ListDecisionsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListDecisionsResponse:
        problems = Violations()
        check_id(problems, "profile_id", request.profile_id, required=True,
                 max_length=MAX_PROFILE_ID_LENGTH)
        problems.raise_if_any()
        size, after = page_size(request.page_size), _decision_cursor(request.page_token)
        workspace, profile_id = current_workspace(), request.profile_id
        found, last = await self.transactions.run(
            lambda uow: people.list_decisions(uow, workspace, profile_id, after, size))
        return pb.ListDecisionsResponse(
            decisions=[decision_to_proto(d) for d in found],
            next_page_token=next_page_token(
                "after", None if last is None else [last[0].isoformat(), last[1]]))

    async def RecordExposures(self, request: pb.RecordExposuresRequest,
                              context: grpc.aio.ServicerContext,
                              ) -> pb.RecordExposuresResponse:
        workspace = current_workspace()
        answer = BatchAnswer(request.exposures, "exposures", DOMAIN, pb.RecordExposureResult)
        now = self.transactions.clock.now()

        def parse(exposure: pb.Exposure) -> tuple[str, datetime | None]:
            # The shared checks came first (BatchAnswer.parse): the time is in range.
            problems = Violations()
            check_id(problems, "decision_id", exposure.decision_id, required=True)
            when = (from_timestamp(exposure.expose_time) if exposure.HasField("expose_time")
                    else None)
            # Not after now (give or take clock skew): a window would never close. Not before
            # the decision: checked with the decision, in exposures.expose.
            problems.check(when is None or when <= now + exposures.MAX_CLOCK_SKEW,
                           "expose_time", "must not lie in the future")
            problems.raise_if_any()
            return exposure.decision_id, when

        items = answer.parse(parse)
        answers = await self.transactions.run(lambda uow: exposures.expose(
            uow, workspace, [item for _, item in items]))
        for (index, _), outcome in zip(items, answers, strict=True):
            if isinstance(outcome, CjoError):
                answer.fail(index, outcome)
            elif outcome:
                answer.result(index).duplicate = True
        return answer.response(pb.RecordExposuresResponse)


@dataclass(frozen=True)
class DecideRequestItem:
    profile_id: str
    profile: dict[str, Any] | None  # the inline view; None: read it from identity
    context: DecisionContext
    request_id: str


class _SharedContext:
    """A BatchDecide's shared context, parsed once for the items that use it: one object, so
    the decisions share its conversions (log JSON, reply proto) too."""

    def __init__(self, proto: decision_pb2.DecisionContext) -> None:
        self.proto = proto
        self.parsed: DecisionContext | None = None

    def get(self) -> DecisionContext:
        if self.parsed is None:
            self.parsed = context_from_proto(self.proto)
        return self.parsed


def _check_time(problems: Violations, field_path: str, context: DecisionContext,
                now: datetime) -> None:
    if context.time is not None:
        problems.check(abs(context.time - now) <= MAX_CONTEXT_TIME_SKEW, field_path,
                       f"must lie within {describe(MAX_CONTEXT_TIME_SKEW)} of now")


def _item(profile_id: str, profile: struct_pb2.Struct | None,
          context: decision_pb2.DecisionContext | _SharedContext,
          request_id: str, now: datetime) -> DecideRequestItem:
    problems = Violations()
    # The same limits as the log's columns, so one bad id fails its own item with a field
    # path rather than the batch's insert.
    check_id(problems, "profile_id", profile_id, required=True,
             max_length=MAX_PROFILE_ID_LENGTH)
    check_id(problems, "request_id", request_id)
    shared = isinstance(context, _SharedContext)
    parsed = context.get() if isinstance(context, _SharedContext) else context_from_proto(context)
    if not shared:
        for name in ("journey_id", "enrollment_id", "node_id"):
            check_id(problems, f"context.{name}", getattr(parsed, name))
        _check_time(problems, "context.time", parsed, now)
    problems.raise_if_any()
    check_context(parsed)  # each item's error, as if it had given the context itself
    return DecideRequestItem(profile_id, None if profile is None else struct_to_dict(profile),
                             parsed, request_id)


def _check_shared(context: DecisionContext, now: datetime) -> None:
    """A BatchDecide's shared context, checked once for the whole call."""
    problems = Violations()
    for name in ("journey_id", "enrollment_id", "node_id"):
        check_id(problems, f"context.{name}", getattr(context, name))
    _check_time(problems, "context.time", context, now)
    problems.raise_if_any()


def _decision_cursor(token: str) -> tuple[datetime, str] | None:
    """ListDecisions' keyset cursor: the last decision's decide time and id."""
    after = cursor_value(token, "after", list)
    if after is None:
        return None
    try:
        time, decision_id = after
        parsed = datetime.fromisoformat(time)
        if parsed.tzinfo is None or not isinstance(decision_id, str):
            raise ValueError("not a cursor this method made")
        return parsed.astimezone(UTC), decision_id
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument.one("page_token", "is not a token returned by this method"
                                  ) from None
