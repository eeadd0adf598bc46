"""Helpers shared by the test suites: settings, databases and in-process servers."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import socket
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cjo.identity.v1 import backfill_pb2, identity_settings_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo_platform.config import Env, ServiceSettings, load_service_settings
from cjo_platform.rpc.client import on_behalf_of
from cjo_platform.rpc.server import ServiceApp, serve

SERVICE_TOKEN = "test-service-token-0123456789abcdef"
PG_URL = os.environ.get("CJO_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


# Ports free_port() handed out in this process: one not yet bound when the next is asked for
# is still free, and would otherwise be handed out twice.
_handed_out: set[int] = set()
# Other test processes on the machine (a second pytest, helpers' runs beside CI) pick from the
# same range: each port handed out is also locked in a file here (flock, released when the
# process ends) so another process skips it until it is bound. The newest locks are held.
_PORT_LOCKS = Path(tempfile.gettempdir()) / "cjo-test-ports"
_HELD_LOCKS = 64
_held: deque[int] = deque()
# Below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 by
# default) and above the loopback services (RabbitMQ's 25672 is the highest): a port taken from
# the ephemeral range could, before the test binds it, become the local end of an outgoing
# connection (to PostgreSQL, NATS...), and the bind would then fail with "address in use".
_PORT_RANGE = (26000, 32767)


def _reserve(port: int) -> bool:
    """False when another process handed ``port`` out recently (it may not have bound it yet);
    else it is this process's until :data:`_HELD_LOCKS` more are handed out."""
    _PORT_LOCKS.mkdir(exist_ok=True)
    fd = os.open(_PORT_LOCKS / str(port), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held.append(fd)
    if len(_held) > _HELD_LOCKS:
        os.close(_held.popleft())
    return True


def free_port() -> int:
    """A loopback port nothing listens on or connects from, never one this process was given
    before nor one another process was given recently, outside the range the kernel picks
    outgoing connections' ports from."""
    while True:
        port = random.randint(*_PORT_RANGE)
        if port in _handed_out or not _reserve(port):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


@dataclass
class Backend:
    """Where a test's services keep their data: SQLite files in a temporary directory, or
    PostgreSQL schemas unique to the test (dropped afterwards)."""

    kind: str  # "sqlite" | "postgresql"
    data_dir: Path
    schema_prefix: str

    def env(self) -> dict[str, str]:
        env = {"CJO_DATA_DIR": str(self.data_dir), "CJO_DATABASE_SCHEMA_PREFIX": self.schema_prefix}
        if self.kind == "postgresql":
            env["CJO_DATABASE_URL"] = PG_URL
        return env


def new_backend(kind: str, tmp_path: Path) -> Backend:
    return Backend(kind, tmp_path / "data", f"t{uuid.uuid4().hex[:10]}_")


def drop_schemas(backend: Backend) -> None:
    if backend.kind != "postgresql":
        return
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        schemas = conn.execute(sa.text(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
            {"p": backend.schema_prefix + "%"}).scalars().all()
        for schema in schemas:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def settings_for(service: str, backend: Backend, **overrides: str) -> ServiceSettings:
    environ = {"CJO_SERVICE_TOKEN": SERVICE_TOKEN, f"CJO_{service.upper()}_PORT": "0",
               "CJO_SHUTDOWN_GRACE_SECONDS": "1", **backend.env(), **overrides}
    env = Env(environ)
    settings = load_service_settings(service, env)
    env.check()
    return settings


def operator_environ() -> dict[str, str]:
    """This process's environment without its cjo settings, but for the event loop the tests
    run on (CJO_EVENT_LOOP): where a test starts a cjo process as an operator would."""
    return {k: v for k, v in os.environ.items()
            if k == "CJO_EVENT_LOOP" or not k.startswith(("CJO_", "OTEL_"))}


def command_env(data_dir: Path, **env: str) -> dict[str, str]:
    """The environment of a `python -m cjo_<service>` process, as an operator would run it: this
    process's, without its cjo settings (but for the event loop the tests run on), plus
    ``env``."""
    environ = operator_environ()
    environ.update({"CJO_SERVICE_TOKEN": SERVICE_TOKEN, "CJO_DATA_DIR": str(data_dir), **env})
    return environ


def as_service(workspace_id: str) -> tuple[tuple[str, str], ...]:
    """Metadata of a cjo service acting for ``workspace_id``."""
    return on_behalf_of(SERVICE_TOKEN, workspace_id)


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


@asynccontextmanager
async def serving(app: ServiceApp) -> AsyncIterator[str]:
    """Run ``app`` in this event loop; yields its address; stops and drains on exit."""
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(app, stop=stop, handle_signals=False,
                                     on_ready=ready.set_result))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    try:
        yield f"127.0.0.1:{ready.result()}"
    finally:
        stop.set()
        await task


@asynccontextmanager
async def receiving_at_most(limit: int, register: Callable[[grpc.aio.Server], None],
                            ) -> AsyncIterator[str]:
    """A bare gRPC server (a stand-in for a peer) whose servicers ``register`` adds, taking
    requests of ``limit`` bytes at most (gRPC answers a larger one RESOURCE_EXHAUSTED, "...
    larger than max"); yields its address."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit)])
    register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def eventually(check: Callable[[], object], timeout: float = 10.0,
                     interval: float = 0.05) -> object:
    """Poll an (async or sync) check until it returns a truthy value or time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


async def refused_within(bound: float, since: float, refused: Callable[[], Awaitable[bool]],
                         slack: float = 0.5) -> None:
    """Poll ``refused`` (whether a revoked or deleted key is refused wherever it is tried)
    until it is; ``since`` is ``time.monotonic()`` when the revocation returned. Fails when a
    poll begun more than ``bound`` + ``slack`` seconds after that still found the key trusted.
    When the refusal is seen is not asserted: on a loaded machine polls come less often and
    take longer (a deleted key's refusal was once seen 3.7 s after, against a bound of 2 s
    and 1 s of slack), but no slow poll makes a late one pass; a cache trusting the key past
    the bound does."""
    async def poll() -> bool:
        began = time.monotonic() - since
        if await refused():
            return True
        assert began <= bound + slack, \
            f"the key was still trusted by a call begun {began:.2f} s after (bound {bound} s)"
        return False

    await eventually(poll, timeout=bound + 30)


async def same_answer_to_concurrent_repeats(call: Callable[..., Any], request: Any,
                                            metadata: Any, times: int = 8) -> Any:
    """Send ``request`` (carrying a ``request_id``) ``times`` times at once; every call must
    succeed with the same answer, which is returned. A repeat of a mutating RPC returns the
    first answer, also when the repeats race each other."""
    answers = await asyncio.gather(*(call(request, metadata=metadata) for _ in range(times)))
    first = answers[0]
    assert all(answer == first for answer in answers), answers
    return first


async def segment_backfilled(identity: Any, metadata: Any, segment_id: str) -> Any:
    """The segment once identity's time worker finished its backfill (its members complete);
    ``identity`` is an IdentityService stub."""
    async def done() -> Any:
        got = (await identity.GetSegment(identity_pb.GetSegmentRequest(
            name=f"segments/{segment_id}"), metadata=metadata)).segment
        return got if got.backfill.state == backfill_pb2.BACKFILL_STATE_DONE else None

    return await eventually(done, timeout=30)


def counted_events(**traits: str) -> identity_settings_pb2.IdentitySettings:
    """Identity settings whose computed traits each count one event's occurrences: trait name
    -> event name."""
    return identity_settings_pb2.IdentitySettings(computed_traits=[
        identity_settings_pb2.ComputedTrait(
            name=name, event_name=event_name,
            aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_COUNT)
        for name, event_name in traits.items()])


def span_recorder() -> InMemorySpanExporter:
    """Records spans whether or not this process already has an SDK tracer provider."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter
