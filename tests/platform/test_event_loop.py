"""The event loop a service process serves on is the one CJO_EVENT_LOOP names
(cjo_platform.event_loop): checked in a real ``python -m cjo_<service>`` process, by the loop it
reports running, and a name that is no loop stops the process at start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cjo_platform.event_loop import EVENT_LOOPS
from support import command_env, free_port


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_a_service_process_serves_on_the_configured_event_loop(loop: str,
                                                               tmp_path: Path) -> None:
    env = command_env(tmp_path, CJO_EVENT_LOOP=loop, CJO_LOG_FORMAT="json",
                      CJO_ANALYTICS_PORT=str(free_port()), CJO_METRICS_PORT="0",
                      PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "cjo_analytics"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until the line that says it serves (or the process ends)
            lines.append(line)
            if '"serving"' in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    serving = [json.loads(line) for line in lines if '"serving"' in line]
    assert serving, "".join(lines)[-3000:]
    assert serving[0]["event_loop"] == loop


def test_a_name_that_is_no_event_loop_stops_the_process(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cjo_analytics"], capture_output=True,
                          text=True, timeout=60,
                          env=command_env(tmp_path, CJO_EVENT_LOOP="trio",
                                          CJO_ANALYTICS_PORT=str(free_port())))
    assert done.returncode == 2
    assert "CJO_EVENT_LOOP='trio' must be one of asyncio, uvloop" in done.stderr
