"""Workspaces (tenants) and their API keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cjo_platform.errors import Violations

WORKSPACE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
MAX_DISPLAY_NAME_LENGTH = 200


@dataclass(frozen=True)
class Workspace:
    workspace_id: str
    display_name: str
    create_time: datetime


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: only the hash of its secret is ever kept."""

    key_id: str
    workspace_id: str
    display_name: str
    secret_hash: str
    create_time: datetime


def check_new_workspace(workspace_id: str, display_name: str) -> None:
    problems = Violations()
    problems.check(bool(WORKSPACE_ID.fullmatch(workspace_id)), "workspace_id",
                   "must be 3 to 63 lower-case letters, digits or dashes, "
                   "starting and ending with a letter or digit")
    _check_display_name(problems, display_name)
    problems.raise_if_any()


def check_new_api_key(display_name: str) -> None:
    problems = Violations()
    _check_display_name(problems, display_name)
    problems.raise_if_any()


def _check_display_name(problems: Violations, display_name: str) -> None:
    problems.check(len(display_name) <= MAX_DISPLAY_NAME_LENGTH, "display_name",
                   f"at most {MAX_DISPLAY_NAME_LENGTH} characters")
