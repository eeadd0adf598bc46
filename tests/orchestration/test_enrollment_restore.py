"""An enrollment restored from stored rows (built without the frozen dataclass's ``__init__``,
for speed) is made of exactly its fields: rows whose columns miss one are refused with a real
error, checked once per query, and also under ``python -O``; other columns are left out."""

from __future__ import annotations

import subprocess
import sys
from collections import namedtuple
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cjo_orchestration.adapters.enrollments import _enrollments
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState

START = datetime(2026, 3, 1, tzinfo=UTC)
FIELDS = [f.name for f in fields(Enrollment)]


def stored(names: list[str]) -> list[Any]:
    """Two rows of a query with these columns (a Row has ``_fields`` as a named tuple does)."""
    values = {"workspace_id": "ws", "enrollment_id": "e1", "journey_id": "j1",
              "journey_version": 1, "profile_id": "ada", "state": "active",
              "current_node_id": "mail", "due_time": START, "create_time": START,
              "update_time": START, "lease_until": None, "lease_token": None, "entry_id": "x"}
    row = namedtuple("row", names)  # type: ignore[misc]
    return [row(*(values.get(name) for name in names))] * 2


def test_rows_with_every_field_are_restored() -> None:
    found = _enrollments(stored([*FIELDS, "lease_until", "entry_id"]))
    assert [(e.enrollment_id, e.state) for e in found] == [("e1", EnrollmentState.ACTIVE)] * 2


def test_rows_missing_a_field_are_refused_and_other_columns_left_out() -> None:
    with pytest.raises(TypeError, match=r"missing \['goal_time'\], unknown \[\]"):
        _enrollments(stored([name for name in FIELDS if name != "goal_time"]))
    [enrollment, _] = _enrollments(stored([*FIELDS, "watches"]))
    assert "watches" not in vars(enrollment)
    # A claim reads no traits and gives them instead.
    assert len(_enrollments(stored([n for n in FIELDS if n != "traits"]), traits={})) == 2


def test_the_check_holds_under_python_O() -> None:
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
            "from test_enrollment_restore import FIELDS, stored;"
            "from cjo_orchestration.adapters.enrollments import _enrollments;"
            "assert False, 'asserts are on';")
    check = ("\ntry:\n    _enrollments(stored(FIELDS[1:]))\nexcept TypeError as exc:\n"
             "    print('refused', exc)\n")
    ran = subprocess.run([sys.executable, "-O", "-c", code + check], capture_output=True,
                         text=True, check=True, timeout=60)
    assert ran.stdout.startswith("refused an enrollment is restored from its fields exactly")
