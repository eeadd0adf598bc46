"""Wires the console: settings, logging, the Starlette app, served by uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from cjo_console.api.app import create_app
from cjo_console.config import load
from cjo_platform.config import ConfigError, warn_unused
from cjo_platform.logging import configure_logging, get_logger


def main() -> None:
    try:
        settings = load()
    except ConfigError as exc:
        sys.exit(str(exc))
    configure_logging("console", fmt=settings.log_format, level=settings.log_level)
    log = get_logger()
    warn_unused("console", settings.unused, log)
    log.info("console starting", host=settings.host, port=settings.port)
    # uvicorn handles SIGTERM: stops accepting, lets requests in flight finish, then exits.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="warning", access_log=False, proxy_headers=False,
                timeout_graceful_shutdown=5, loop=settings.event_loop)
