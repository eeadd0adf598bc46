"""The event loop a cjo process runs on (CJO_EVENT_LOOP): uvloop (libuv, the default) or
asyncio's own.

Every service process (:func:`cjo_platform.rpc.server.main`) and ``make run``'s supervisor start
their loop here, and the console hands the same choice to uvicorn, so one variable picks it for
all of them. uvloop costs ~15-25 µs less CPU per gRPC call on each side; grpc.aio runs on it
unchanged (docs/capacity-journal.md). The ``cjo`` command line, a client package of its own that
makes a few calls per command, keeps asyncio's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from cjo_platform.config import Env

EVENT_LOOPS = ("asyncio", "uvloop")
DEFAULT_EVENT_LOOP = "uvloop"

T = TypeVar("T")


def event_loop_setting(env: Env) -> str:
    """CJO_EVENT_LOOP, checked with the rest of ``env`` (``env.check()``)."""
    return env.choice("CJO_EVENT_LOOP", DEFAULT_EVENT_LOOP, EVENT_LOOPS)


def configured_event_loop() -> str:
    """CJO_EVENT_LOOP of this process's environment (ConfigError if it names no loop)."""
    env = Env()
    name = event_loop_setting(env)
    env.check()
    return name


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What creates a loop of kind ``name``; None: asyncio's default."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(main: Coroutine[Any, Any, T], name: str | None = None) -> T:
    """:func:`asyncio.run` on the loop ``name`` (by default: CJO_EVENT_LOOP's)."""
    factory = loop_factory(configured_event_loop() if name is None else name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_kind() -> str:
    """Which of :data:`EVENT_LOOPS` the running loop is (what a process logs as it serves)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") \
        else "asyncio"
