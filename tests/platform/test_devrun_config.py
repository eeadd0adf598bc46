"""`make run` (cjo_platform.devrun) checks the ports it is given as every setting is checked:
a bad one stops it with a message naming the variable, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import operator_environ

ROOT = Path(__file__).resolve().parents[2]


def test_a_bad_port_stops_make_run_with_a_message_naming_it(tmp_path: Path) -> None:
    env = {**operator_environ(), "CJO_DEV_STATE": str(tmp_path / ".cjo"),
           "CJO_DELIVERY_PORT": "5oo54", "CJO_DEV_SMTP_PORT": "70000"}
    run = subprocess.run([sys.executable, "-m", "cjo_platform.devrun"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "make run: invalid configuration" in run.stderr
    assert "CJO_DELIVERY_PORT='5oo54' is not an integer" in run.stderr
    assert "CJO_DEV_SMTP_PORT=70000 is outside 1..65535" in run.stderr
    assert not (tmp_path / ".cjo").exists()  # stopped before it started anything
