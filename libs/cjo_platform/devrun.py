"""`make run`: all six services and the web console under one supervisor, for development.

Starts a development mailbox (an SMTP server on loopback that keeps every email under
``.cjo/mail``), runs each service as its own process with readable interleaved logs, waits until
every one reports SERVING, starts the web console (HTTP: it answers GET /healthz, not gRPC
health), makes sure a development workspace exists and prints its API key.
Ctrl-C (or SIGTERM) stops everything cleanly: each service drains, then exits.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_platform import event_loop
from cjo_platform.config import (
    DEFAULT_METRICS_PORT,
    DEFAULT_PORTS,
    HTTP_PORTS,
    ConfigError,
    Env,
)
from cjo_platform.rpc.client import on_behalf_of

STATE = Path(os.environ.get("CJO_DEV_STATE", ".cjo"))
DEV_WORKSPACE = "dev"
# On one machine each process needs its own /metrics port: 9464, 9465, ... in DEFAULT_PORTS order,
# then the HTTP processes (the console serves none today; a port of its own keeps it from ever
# taking identity's).
METRICS_PORTS = {name: DEFAULT_METRICS_PORT + i
                 for i, name in enumerate((*DEFAULT_PORTS, *HTTP_PORTS))}
DEFAULT_MAIL_PORT = 1025


@dataclass(frozen=True)
class DevPorts:
    """Where `make run` listens: each service's gRPC port (the default unless
    CJO_<SERVICE>_PORT moves it: 50051-50056 lie in Linux's ephemeral range, so another
    program's outgoing connection can hold one; the services are told each other's,
    CJO_<SERVICE>_TARGET) and the development mailbox's (CJO_DEV_SMTP_PORT)."""

    services: dict[str, int]
    mail: int


def dev_ports(environ: Mapping[str, str] | None = None) -> DevPorts:
    """The ports, validated as every setting is: a bad one is a ConfigError naming it."""
    env = Env(environ)
    # Not 0 (a port of the kernel's choosing), which the services could not be told.
    ports = DevPorts(
        services={name: env.int(f"CJO_{name.upper()}_PORT", port, minimum=1, maximum=65535)
                  for name, port in DEFAULT_PORTS.items()},
        mail=env.int("CJO_DEV_SMTP_PORT", DEFAULT_MAIL_PORT, minimum=1, maximum=65535))
    env.check()
    return ports


COLORS = {"identity": 36, "content": 35, "orchestration": 33, "delivery": 32, "analytics": 34,
          "decisioning": 31, "console": 94, "mailbox": 37}


def say(source: str, line: str) -> None:
    tty = sys.stdout.isatty()
    label = f"{source:>13} |"
    if tty:
        label = f"\033[{COLORS.get(source, 37)}m{label}\033[0m"
    print(f"{label} {line}", flush=True)


def service_token() -> str:
    path = STATE / "service-token"
    if not path.exists():
        STATE.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


class Mailbox:
    """aiosmtpd handler that stores each email as an .eml file and logs a one-line summary."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        mail = message_from_bytes(data, policy=policy.default)
        name = f"{len(list(self.folder.glob('*.eml'))) + 1:05d}.eml"
        (self.folder / name).write_bytes(data)
        say("mailbox", f"to={','.join(envelope.rcpt_tos)} subject={mail['subject']!r} "
                       f"saved={self.folder / name}")
        return "250 Message accepted for delivery"


async def pump(name: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        say(name, line.decode(errors="replace").rstrip())


async def wait_serving(name: str, target: str, proc: asyncio.subprocess.Process) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            if proc.returncode is not None:
                raise SystemExit(f"{name} exited with {proc.returncode} during start-up")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{name} did not become ready at {target}")


async def wait_http(name: str, port: int, proc: asyncio.subprocess.Process) -> None:
    """Wait until an HTTP process answers ``GET /healthz`` with 200."""
    for _ in range(300):
        if proc.returncode is not None:
            raise SystemExit(f"{name} exited with {proc.returncode} during start-up")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 1)
            writer.close()
            if b" 200 " in status:
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"{name} did not become ready on port {port}")


async def dev_api_key(token: str, identity_port: int) -> str:
    """The development workspace's key: reuse the saved one while it works, else make one."""
    key_file = STATE / "dev-api-key"
    target = f"127.0.0.1:{identity_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        # The generated *_pb2_grpc modules carry no annotations (no .pyi is generated for them).
        stub = ws_grpc.WorkspaceServiceStub(channel)  # type: ignore[no-untyped-call]
        if key_file.exists():
            saved = key_file.read_text().strip()
            try:
                await stub.GetWorkspace(
                    ws_pb.GetWorkspaceRequest(name=f"workspaces/{DEV_WORKSPACE}"),
                    metadata=(("authorization", f"Bearer {saved}"),))
                return saved
            except grpc.aio.AioRpcError:
                pass
        try:
            created = await stub.CreateWorkspace(
                ws_pb.CreateWorkspaceRequest(workspace_id=DEV_WORKSPACE,
                                             display_name="Development"),
                metadata=(("authorization", f"Bearer {token}"),))
            secret: str = created.api_key.secret
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            made = await stub.CreateApiKey(ws_pb.CreateApiKeyRequest(display_name="make run"),
                                           metadata=on_behalf_of(token, DEV_WORKSPACE))
            secret = made.api_key.secret
    key_file.write_text(secret)
    key_file.chmod(0o600)
    return secret


async def supervise(ports: DevPorts) -> int:
    from aiosmtpd.controller import Controller

    token = service_token()
    mailbox = Controller(Mailbox(STATE / "mail"), hostname="127.0.0.1", port=ports.mail)
    mailbox.start()
    env = {
        **os.environ,
        "CJO_SERVICE_TOKEN": token,
        "CJO_DATA_DIR": str(STATE / "data"),
        "CJO_LOG_FORMAT": os.environ.get("CJO_LOG_FORMAT", "console"),
        "CJO_SMTP_HOST": "127.0.0.1",
        "CJO_SMTP_PORT": str(ports.mail),
        # Development: a workspace's providers may be on this machine (the development mailbox
        # of examples/providers/dev_mailbox.yaml is 127.0.0.1:1025).
        "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS": os.environ.get(
            "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS", "true"),
        "PYTHONUNBUFFERED": "1",
        **{f"CJO_{name.upper()}_PORT": str(port) for name, port in ports.services.items()},
        **{f"CJO_{name.upper()}_TARGET": f"127.0.0.1:{port}"
           for name, port in ports.services.items()},
    }
    if not os.environ.get("CJO_CONSOLE_SECRET", "").strip():
        # Development only: a new one each `make run`, so console sign-ins last as long as
        # this run. Set CJO_CONSOLE_SECRET to keep them across runs.
        env["CJO_CONSOLE_SECRET"] = secrets.token_urlsafe(32)
        say("console", "CJO_CONSOLE_SECRET is unset: sealing sessions under a development "
            "secret generated for this run (sign-ins end when it stops)")
    procs: dict[str, asyncio.subprocess.Process] = {}
    pumps = []
    # The console only calls the services, so it can start with them; it is waited for apart,
    # over HTTP.
    for name in (*DEFAULT_PORTS, *HTTP_PORTS):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"cjo_{name}",
            env={**env, "CJO_METRICS_PORT": str(METRICS_PORTS[name])},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        procs[name] = proc
        assert proc.stdout is not None
        pumps.append(asyncio.create_task(pump(name, proc.stdout)))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.gather(*(wait_serving(n, f"127.0.0.1:{ports.services[n]}", procs[n])
                               for n in DEFAULT_PORTS),
                             *(wait_http(n, HTTP_PORTS[n], procs[n]) for n in HTTP_PORTS))
        key = await dev_api_key(token, ports.services["identity"])
        moved = "".join(f"CJO_{name.upper()}_TARGET=127.0.0.1:{port} "
                        for name, port in ports.services.items() if port != DEFAULT_PORTS[name])
        print("\ncjo is running:")
        for name, port in ports.services.items():
            print(f"  {name:<14} 127.0.0.1:{port}   "
                  f"metrics http://127.0.0.1:{METRICS_PORTS[name]}/metrics")
        print(f"  {'console':<14} http://127.0.0.1:{HTTP_PORTS['console']} "
              "(sign in with the API key below)")
        print(f"  {'mailbox':<14} smtp://127.0.0.1:{ports.mail} "
              f"(emails saved in {STATE / 'mail'})")
        print(f"\nworkspace: {DEV_WORKSPACE}\nAPI key:   {key}\n"
              f"try:       {moved}CJO_API_KEY={key} .venv/bin/python examples/first_journey.py\n"
              "Ctrl-C stops everything.\n", flush=True)
        waiters = [asyncio.create_task(p.wait()) for p in procs.values()]
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
        for name, proc in procs.items():
            if proc.returncode is not None and not stop.is_set():
                say(name, f"exited with {proc.returncode}; stopping the others")
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs.values())), 20)
        except TimeoutError:
            for proc in procs.values():
                if proc.returncode is None:
                    proc.kill()
        await asyncio.gather(*pumps, return_exceptions=True)
        mailbox.stop()
    failed = {n: p.returncode for n, p in procs.items() if p.returncode not in (0, None)}
    return 1 if failed and not stop.is_set() else 0


def main() -> None:
    try:
        raise SystemExit(event_loop.run(supervise(dev_ports())))
    except ConfigError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
