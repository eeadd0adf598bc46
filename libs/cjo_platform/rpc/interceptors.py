"""Server interceptors: request logging, domain errors -> rich status, authentication.

Each wraps the method's behaviour; order (outermost first) is tracing, logging, errors, auth,
validation (:mod:`cjo_platform.rpc.validation`), so the log line carries the final status code,
auth failures become proper statuses, and only an authenticated caller learns what is wrong
with a request. A server runs them all as one :class:`Layered` interceptor, which composes their
decorators once per method: a chain of grpc.aio interceptors costs an ``intercept_service``
coroutine per layer on every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

import grpc
import structlog

from cjo_platform.db.item_writes import database_unavailable
from cjo_platform.errors import CjoError, PermissionDenied
from cjo_platform.logging import get_logger
from cjo_platform.rpc.auth import (
    Authenticator,
    Principal,
    authorize,
    set_method,
    set_principal,
)
from cjo_platform.rpc.status import to_grpc_status

log = get_logger("cjo.rpc")

Behavior = Callable[..., Any]
Decorator = Callable[[Behavior, str, bool], Behavior]

# Methods anyone may call: health checks and reflection.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _rewrap(handler: grpc.RpcMethodHandler, decorate: Decorator, method: str,
            decoding: Callable[[Any], Any] | None = None) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour decorated (and, given ``decoding``, its request
    deserializer replaced by ``decoding(deserializer)``)."""
    deserializer = handler.request_deserializer
    if decoding is not None and deserializer is not None:
        deserializer = decoding(deserializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            decorate(handler.unary_unary, method, False),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            decorate(handler.stream_unary, method, False),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            decorate(handler.unary_stream, method, True),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(
        decorate(handler.stream_stream, method, True),
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer)


# grpcio ships no type information, so its base class is Any to mypy.
class _Wrapping(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that decorates each method's behaviour. The decorated handler depends
    only on the method and the handler below it, so it is built once per method and reused
    (while the handler below is the same object: the registered one, or a lower interceptor's
    cached one), instead of on every call: a single-item call pays no rebuilding."""

    # The request deserializer's replacement (see _rewrap), if any.
    decoding: Callable[[Any], Any] | None = None

    def __init__(self) -> None:
        # method -> (the handler below, the decorated handler built on it)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def decorate(self, behavior: Behavior, method: str, streaming: bool) -> Behavior:
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _rewrap(handler, self.decorate, method, self.decoding)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class Layered(_Wrapping):
    """One interceptor running several layers, outermost first: each a :class:`_Wrapping`
    (its ``decorate`` and request ``decoding``) or a bare decorator. Their decorators are
    composed once per method, so a call pays one ``intercept_service``, not one per layer.
    Health checks and reflection pass through every layer untouched, as with each alone."""

    def __init__(self, layers: Sequence[_Wrapping | Decorator]) -> None:
        super().__init__()
        self._decorators = [layer.decorate if isinstance(layer, _Wrapping) else layer
                            for layer in layers]
        decodings = [layer.decoding for layer in layers
                     if isinstance(layer, _Wrapping) and layer.decoding is not None]
        if len(decodings) > 1:
            raise ValueError("at most one layer may replace the request deserializer")
        self.decoding = decodings[0] if decodings else None

    def decorate(self, behavior: Behavior, method: str, streaming: bool) -> Behavior:
        for decorator in reversed(self._decorators):
            behavior = decorator(behavior, method, streaming)
        return behavior


Finish = Callable[[grpc.aio.ServicerContext, float], None]


def around_each_call(behavior: Behavior, streaming: bool, finish: Finish,
                     begin: Callable[[], None] | None = None) -> Behavior:
    """``behavior`` run between ``begin()`` and ``finish(context, seconds it took)``, for a
    unary answer or a whole stream: what the logging and the metrics interceptors each add
    around an RPC (``finish`` runs however the call ends, so it reads the final code)."""
    if streaming:
        async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if begin is not None:
                begin()
            started = time.perf_counter()
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                finish(context, time.perf_counter() - started)
        return stream_behavior

    async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if begin is not None:
            begin()
        started = time.perf_counter()
        try:
            return await behavior(request, context)
        finally:
            finish(context, time.perf_counter() - started)
    return unary_behavior


SLOW_RPC_MS = 1000.0
"""An OK call is logged (at info) only when at least this slow (``CJO_LOG_SLOW_RPC_MS``)."""


class LoggingInterceptor(_Wrapping):
    """A log line per RPC that failed (warning; error for INTERNAL and UNKNOWN) or took at
    least ``slow_ms`` (info, ``slow=True``), with method, workspace, status code and duration;
    every other call at debug only (``CJO_LOG_LEVEL=debug``): a line per successful call was a
    fixed cost on every call between the services."""

    def __init__(self, slow_ms: float = SLOW_RPC_MS) -> None:
        super().__init__()
        self.slow_seconds = slow_ms / 1000

    def decorate(self, behavior: Behavior, method: str, streaming: bool) -> Behavior:
        slow_seconds = self.slow_seconds

        def begin() -> None:
            structlog.contextvars.bind_contextvars(method=method)

        def finish(context: grpc.aio.ServicerContext, seconds: float) -> None:
            code = context.code() or grpc.StatusCode.OK
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            if name == "OK" or name == "CANCELLED":
                if seconds < slow_seconds:
                    log.debug("rpc", code=name, duration_ms=round(seconds * 1000, 2))
                    return
                log.info("rpc", code=name, duration_ms=round(seconds * 1000, 2), slow=True)
                return
            level = "error" if name == "INTERNAL" or name == "UNKNOWN" else "warning"
            getattr(log, level)("rpc", code=name, duration_ms=round(seconds * 1000, 2))

        return around_each_call(behavior, streaming, finish, begin)


class ErrorInterceptor(_Wrapping):
    """Domain errors become rich statuses; a database that is down or out of connections
    becomes UNAVAILABLE (callers retry; no request and no forwarded row is blamed for it);
    anything else unexpected becomes INTERNAL, logged with its stack, without leaking internals
    to the caller."""

    def __init__(self, domain: str) -> None:
        super().__init__()
        self.domain = domain

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if not isinstance(exc, CjoError) and database_unavailable(exc):
            log.warning("database unavailable; answered UNAVAILABLE", error=repr(exc)[:300])
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "the service's database is unavailable; retry later")
            return
        if not isinstance(exc, CjoError):
            log.error("unhandled error", exc_info=exc)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            return
        status = to_grpc_status(exc, self.domain)
        await context.abort(status.code, status.details, status.trailing_metadata)

    def decorate(self, behavior: Behavior, method: str, streaming: bool) -> Behavior:
        if streaming:
            async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for item in behavior(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await self._abort(context, exc)
            return stream_behavior

        async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(context, exc)
        return unary_behavior


async def _step(items: AsyncIterator[Any]) -> Any:
    return await anext(items)


class AuthInterceptor(_Wrapping):
    """Authenticates every non-public call, checks the key's scope covers the method, and binds
    the principal for the request."""

    def __init__(self, authenticator: Authenticator, service_only: Collection[str]) -> None:
        super().__init__()
        self.authenticator = authenticator
        self.service_only = frozenset(service_only)

    async def _login(self, context: grpc.aio.ServicerContext, method: str) -> Principal:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        principal = await self.authenticator.authenticate(metadata)
        if method in self.service_only and not principal.is_service:
            raise PermissionDenied(f"{method} is for cjo services only",
                                   reason="SERVICE_ONLY_METHOD")
        authorize(principal, method)
        set_principal(principal)
        set_method(method)
        if principal.workspace_id:
            structlog.contextvars.bind_contextvars(workspace=principal.workspace_id)
        return principal

    async def _stream(self, behavior: Behavior, request: Any,
                      context: grpc.aio.ServicerContext, method: str) -> Any:
        """The stream's items while its key still holds: the key is authenticated again every
        time the key cache would have asked again (and at the secret's expiry), whether or not
        an item is due, so a revoked key or a rotated-out secret ends a stream it opened (with
        UNAUTHENTICATED or PERMISSION_DENIED, as a new call would get) within the cache time."""
        principal = await self._login(context, method)
        items = aiter(behavior(request, context))
        recheck = self.authenticator.recheck_after(principal)
        if recheck is None:  # the service token: nothing to check again
            async for item in items:
                yield item
            return
        deadline = time.monotonic() + recheck
        # Every step of the stream runs in one context of its own (what the servicer binds in
        # it stays bound from item to item), in a task, so the check can run while it waits.
        steps = contextvars.copy_context()
        next_item: asyncio.Task[Any] | None = None
        try:
            while True:
                if next_item is None:
                    next_item = asyncio.create_task(_step(items), context=steps)
                done, _ = await asyncio.wait({next_item},
                                             timeout=max(deadline - time.monotonic(), 0.0))
                if time.monotonic() >= deadline:
                    principal = await self._login(context, method)
                    recheck = max(self.authenticator.recheck_after(principal) or 0.0, 0.05)
                    deadline = time.monotonic() + recheck
                if not done:
                    continue
                finished, next_item = next_item, None
                try:
                    item = finished.result()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if next_item is not None:
                next_item.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await next_item
            aclose = getattr(items, "aclose", None)
            if aclose is not None:  # in the steps' context, where the servicer's finally was
                await asyncio.create_task(aclose(), context=steps)

    def decorate(self, behavior: Behavior, method: str, streaming: bool) -> Behavior:
        if streaming:
            async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async for item in self._stream(behavior, request, context, method):
                    yield item
            return stream_behavior

        async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._login(context, method)
            return await behavior(request, context)
        return unary_behavior
