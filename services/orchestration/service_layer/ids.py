"""Ids orchestration mints: journeys and enrollments."""

from __future__ import annotations

import secrets
from collections.abc import Callable

NewId = Callable[[], str]


def new_id() -> str:
    """80 random bits, hex: unguessable, and short enough for names and send keys."""
    return secrets.token_hex(10)
