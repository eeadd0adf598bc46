from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from nats_support import PrivateNats

from cjo_platform.event_loop import EVENT_LOOPS, configured_event_loop, loop_factory
from cjo_platform.logging import configure_logging
from cjo_platform.rpc.client import close_channels
from support import Backend, drop_schemas, free_port, new_backend, postgres_available

configure_logging("test", fmt="console", level="warning")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each database test runs on SQLite and on PostgreSQL (skipped only where PostgreSQL is
    not listening; CI always has it)."""
    if request.param == "postgresql" and not postgres_available():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    b = new_backend(request.param, tmp_path)
    yield b
    drop_schemas(b)


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Backend:
    return new_backend("sqlite", tmp_path)


def pytest_asyncio_loop_factories(config: pytest.Config,
                                   item: pytest.Item) -> dict[str, LoopFactory]:
    """Tests run on the loop the services run on, CJO_EVENT_LOOP's: `CJO_EVENT_LOOP=uvloop make
    test` runs the servers in tests and the service processes (support.operator_environ keeps
    the variable) on uvloop. A test marked ``asyncio(loop_factories=[...])`` runs on each loop
    it names."""
    marker = item.get_closest_marker("asyncio")
    names = EVENT_LOOPS if marker is not None and "loop_factories" in marker.kwargs \
        else (configured_event_loop(),)
    return {name: loop_factory(name) or asyncio.new_event_loop for name in names}


@pytest.fixture(autouse=True)
async def _close_client_channels() -> AsyncIterator[None]:
    """Services share one channel per target per event loop; each test has its own loop."""
    yield
    await close_channels()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A NATS JetStream server of the test's own, which it may kill and start again."""
    if shutil.which("nats-server") is None:
        pytest.skip("no nats-server binary to run a private broker")
    server = PrivateNats(free_port(), tmp_path / "jetstream", tmp_path / "nats.log")
    server.start()
    yield server
    server.kill()
