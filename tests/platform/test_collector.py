"""Every service process runs Python's cyclic garbage collector rarely
(:mod:`cjo_platform.collector`): at the default threshold it took 13-20% of a service's CPU on
its hot paths. Checked in the real ``python -m cjo_<service> serve`` start-up, up to the moment
it would start serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cjo_platform.collector import YOUNG_COLLECTION_THRESHOLD
from support import command_env

# Runs the service's __main__ with its loop's start replaced: it reports the collector's
# threshold at the moment the server would start, and starts nothing.
_PROBE = """
import gc, runpy, sys
import cjo_platform.event_loop
def report(coroutine, name=None):
    coroutine.close()
    print("threshold", gc.get_threshold()[0])
cjo_platform.event_loop.run = report
sys.argv = ["cjo", "serve"]
runpy.run_module(sys.argv_service, run_name="__main__")
"""


@pytest.mark.parametrize("service", ["identity", "content", "orchestration", "delivery",
                                     "analytics", "decisioning"])
def test_a_service_process_collects_rarely(service: str, tmp_path: Path) -> None:
    probe = _PROBE.replace("sys.argv_service", repr(f"cjo_{service}"))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, env=command_env(tmp_path, CJO_METRICS_PORT="0"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"threshold {YOUNG_COLLECTION_THRESHOLD}" in done.stdout.splitlines()
