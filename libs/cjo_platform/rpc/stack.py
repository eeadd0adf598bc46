"""The layers of every cjo server, run for a unary call as one coroutine.

Each layer (the server span, metrics, the log line, error mapping, authentication, validation)
is a decorator of a method's behaviour; composed, a unary call ran six nested coroutines, each
with its own try/finally, timer and read of the final code (~4 µs of CPU a layer, hot, before
the layer did anything: ``make bench-rpc``). :class:`ServerStack` folds a unary method's layers
into one coroutine, built once per method from the very pieces the layers' decorators are made
of (:meth:`~cjo_platform.rpc.interceptors.LoggingInterceptor.pieces`,
:meth:`~cjo_platform.metrics.MetricsInterceptor.finisher`, ...), so each layer's behaviour has
one home. Streams keep the composed decorators: they are few, and long enough for a layer's
fixed cost not to count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from cjo_platform.metrics import MetricsInterceptor
from cjo_platform.rpc.interceptors import (
    AuthInterceptor,
    Behavior,
    Decorator,
    ErrorInterceptor,
    Finish,
    Layered,
    LoggingInterceptor,
    _Wrapping,
)
from cjo_platform.rpc.tracing import close_server_span, server_span_opener, server_spans
from cjo_platform.rpc.validation import ValidationInterceptor


class ServerStack(Layered):
    """The server's layers, outermost first: the server span (``tracing``), ``metrics``,
    ``logging``, ``errors``, ``auth``, ``validation``; a layer given as None (or False) is left
    out. The order is the one :class:`~cjo_platform.rpc.interceptors.Layered` composes them in,
    and a unary call sees the same: the log line and the metrics read the code the caller got,
    an error becomes its status inside them, only an authenticated caller's request is
    validated, and an error that escapes every layer is recorded on the span."""

    def __init__(self, *, tracing: bool, metrics: MetricsInterceptor | None,
                 logging: LoggingInterceptor | None, errors: ErrorInterceptor | None,
                 auth: AuthInterceptor | None, validation: ValidationInterceptor | None) -> None:
        layers: list[_Wrapping | Decorator | None] = [
            server_spans if tracing else None, metrics, logging, errors, auth, validation]
        super().__init__([layer for layer in layers if layer is not None])
        self.tracing = tracing
        self.metrics = metrics
        self.logging = logging
        self.errors = errors
        self.auth = auth
        self.validation = validation

    def decorate(self, behavior: Behavior, method: str, streaming: bool) -> Behavior:
        if streaming:
            return super().decorate(behavior, method, streaming)
        return self._unary(behavior, method)

    def _unary(self, behavior: Behavior, method: str) -> Behavior:
        open_span = server_span_opener(method) if self.tracing else None
        begin: Callable[[], None] | None = None
        finishes: list[Finish] = []
        if self.logging is not None:
            begin, finish = self.logging.pieces(method)
            finishes.append(finish)
        if self.metrics is not None:
            finishes.append(self.metrics.finisher(method))
        abort = self.errors.abort if self.errors is not None else None
        login = self.auth.login if self.auth is not None else None
        prepare = self.validation.preparer(method) if self.validation is not None else None
        perf_counter = time.perf_counter

        async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            opened = open_span(context) if open_span is not None else None
            if begin is not None:
                begin()
            started = perf_counter()
            escaped: BaseException | None = None
            try:
                try:
                    if login is not None:
                        await login(context, method)
                    if prepare is not None:
                        request = prepare(request)
                    return await behavior(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    if abort is None:
                        raise
                    await abort(context, exc)
                    return None
            except BaseException as exc:
                escaped = exc
                raise
            finally:
                if finishes:
                    seconds = perf_counter() - started
                    for finish in finishes:
                        finish(context, seconds)
                if opened is not None:
                    close_server_span(opened, context, escaped)
        return unary_behavior
