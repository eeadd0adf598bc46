"""The watchdog that interrupts renders past their time limit: its exception never escapes a
guarded call, so the pool threads and the event loop that run renders go on working."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cjo_content.domain.watchdog import DeadlinePassed, Watchdog


def test_the_watchdog_never_leaks_its_exception_into_the_calling_thread() -> None:
    """Calls ending right around their deadline, on a pool thread and on an event loop's:
    some are interrupted, some finish, and the threads go on working afterwards."""
    watchdog = Watchdog(interval=0.002)

    def spin(seconds: float) -> int:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return n

    def near_deadline_calls() -> int:
        interrupted = 0
        for i in range(150):
            try:
                watchdog.call(lambda i=i: spin(0.004 + (i % 7) * 0.003), 0.005)
            except DeadlinePassed:
                interrupted += 1
        return interrupted

    def after() -> str:
        spin(0.2)  # room for a stray exception to be delivered
        return threading.current_thread().name

    with ThreadPoolExecutor(1, thread_name_prefix="render") as pool:
        interrupted = pool.submit(near_deadline_calls).result()
        assert 0 < interrupted < 150
        assert pool.submit(after).result().startswith("render")

    async def on_the_loop() -> tuple[int, str]:
        count = near_deadline_calls()
        await asyncio.sleep(0)
        return count, await asyncio.to_thread(after)

    interrupted, name = asyncio.run(on_the_loop())
    assert 0 < interrupted < 150 and name
    assert spin(0.2) > 0  # the main thread too


class _Finalized:
    def __del__(self) -> None:
        sum(range(200))  # a finalizer doing a little Python work (say, logging)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_swallowed_in_a_finalizer_is_raised_again() -> None:
    """An interrupt delivered inside ``__del__`` is printed and lost there; the watchdog fires
    again while the call stays registered, so the call still ends near its limit."""
    watchdog = Watchdog(interval=0.01)

    def work() -> str:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            _Finalized()  # dropped at once: __del__ runs on this thread
        return "ran to the end"

    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(DeadlinePassed):
            watchdog.call(work, 0.1)
        assert time.monotonic() - started < 1.0


def test_a_short_deadline_holds_while_a_long_one_is_waited_for() -> None:
    """The watchdog sleeps to the nearest deadline: a short call registered while it waits
    for a long one wakes it (the event loop's inline renders use 30 ms)."""
    watchdog = Watchdog()

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    with ThreadPoolExecutor(1) as pool:
        long_call = pool.submit(watchdog.call, spin, 1.0, 0.8)
        time.sleep(0.05)  # the watchdog now sleeps to the long call's deadline
        started = time.monotonic()
        with pytest.raises(DeadlinePassed):
            watchdog.call(spin, 0.03, 1.0)
        assert time.monotonic() - started < 0.2
        long_call.result()
