"""NATS for the event bus tests: is a server listening, and wait until one is."""

from __future__ import annotations

import socket
import time

NATS_URL = "nats://127.0.0.1:4222"


def nats_listening(host: str = "127.0.0.1", port: int = 4222) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait for a server just started (a state, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not nats_listening(host, port):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s")
        time.sleep(0.05)
