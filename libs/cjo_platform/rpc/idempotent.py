"""A mutating RPC's use-case, run once per ``request_id``: the servicer's side of
:meth:`cjo_platform.db.unit_of_work.Transactions.once`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.rpc.auth import current_method, current_workspace

M = TypeVar("M", bound=Message)


async def once(transactions: Transactions, request: Message, response_type: type[M],
               work: Callable[[UnitOfWork], M]) -> M:
    """Answer ``request`` (which carries a ``request_id``) with ``work`` in one unit of work,
    keyed by the current call's workspace and method: a repeat, concurrent ones included, gets
    the first answer; a request without a ``request_id`` simply runs."""
    return await transactions.once(
        workspace_id=current_workspace(), method=current_method(),
        request_id=request.request_id, request=request,
        response_type=response_type, work=work)


async def answer_later(transactions: Transactions, request: Message, response: M) -> M:
    """Replace the stored answer to ``request``'s ``request_id`` with ``response``: for an RPC
    whose change is finished in later transactions after :func:`once` (a segment's scan), so
    a repeat once it is done gets the finished answer. Returns ``response``."""
    request_id = getattr(request, "request_id", "")
    requests = transactions.requests
    if request_id and requests is not None:
        workspace_id, method = current_workspace(), current_method()
        await transactions.run(lambda uow: requests.answer(
            uow.session, workspace_id=workspace_id, method=method, request_id=request_id,
            response=response))
    return response


async def seen(transactions: Transactions, request: Message) -> bool:
    """Whether ``request``'s ``request_id`` was used before (so its work must not be started
    again outside :func:`once`: the first answer stands). False without a ``request_id``."""
    request_id = getattr(request, "request_id", "")
    requests = transactions.requests
    if not request_id or requests is None:
        return False
    workspace_id, method = current_workspace(), current_method()
    return await transactions.run(lambda uow: requests.seen(
        uow.session, workspace_id=workspace_id, method=method, request_id=request_id))
