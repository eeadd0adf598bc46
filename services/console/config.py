"""The console's settings, from the environment, checked at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from cjo_client import Endpoints
from cjo_platform.config import DEFAULT_PORTS, HTTP_PORTS, Env


@dataclass(frozen=True)
class ConsoleSettings:
    host: str
    port: int
    endpoints: Endpoints
    session_lifetime: timedelta
    # Secure cookies need HTTPS: true behind an Ingress with TLS; `make run` serves plain HTTP.
    secure_cookies: bool
    refresh_seconds: float  # how often a journey's graph asks for fresh counts
    log_format: str
    log_level: str


def load(environ: Mapping[str, str] | None = None) -> ConsoleSettings:
    env = Env(environ)

    def target(name: str) -> str:
        explicit = env.environ.get(f"CJO_{name.upper()}_TARGET", "").strip()
        if explicit:
            return explicit
        port = env.int(f"CJO_{name.upper()}_PORT", DEFAULT_PORTS[name], minimum=1,
                       maximum=65535)
        return f"127.0.0.1:{port}"

    settings = ConsoleSettings(
        host=env.str("CJO_HOST", "127.0.0.1"),
        port=env.int("CJO_CONSOLE_PORT", HTTP_PORTS["console"], minimum=0, maximum=65535),
        endpoints=Endpoints({name: target(name) for name in DEFAULT_PORTS}),
        session_lifetime=timedelta(hours=env.float("CJO_CONSOLE_SESSION_HOURS", 8.0,
                                                   minimum=0.01)),
        secure_cookies=env.bool("CJO_CONSOLE_SECURE_COOKIES", False),
        refresh_seconds=env.float("CJO_CONSOLE_REFRESH_SECONDS", 3.0, minimum=0.5),
        log_format=env.choice("CJO_LOG_FORMAT", "auto", ("auto", "json", "console")),
        log_level=env.choice("CJO_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
    )
    env.check()
    return settings
