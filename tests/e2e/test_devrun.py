"""`make run` (cjo_platform.devrun), the README's path from a clone to a running journey: the
supervisor starts all six services and the web console, prints the development workspace's API
key, the README's example sends its welcome email into the development mailbox, and Ctrl-C stops
everything cleanly. The services' gRPC ports are moved to free ones, as CJO_<SERVICE>_PORT lets
a newcomer do when one is taken."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest

from cjo_platform.config import DEFAULT_PORTS
from suite import STATE_TIMEOUT
from support import free_port, operator_environ

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


async def test_make_run_serves_the_readme_example_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    # The services' gRPC ports are moved to free ones (CJO_<SERVICE>_PORT): the defaults,
    # 50051-50056, lie in Linux's ephemeral range, where an outgoing connection of any other
    # process (this test run's own) can hold one (delivery once found 50054 taken in CI).
    ports = {name: free_port() for name in DEFAULT_PORTS}
    env = {**operator_environ(), "CJO_DEV_STATE": str(tmp_path / ".cjo"),
           "CJO_DEV_SMTP_PORT": str(free_port()), "CJO_LOG_FORMAT": "json",
           **{f"CJO_{name.upper()}_PORT": str(port) for name, port in ports.items()}}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cjo_platform.devrun", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []

    async def until(pattern: str) -> re.Match[str]:
        while True:
            line = (await proc.stdout.readline()).decode()  # type: ignore[union-attr]
            assert line, "make run ended early:\n" + "".join(lines[-60:])
            lines.append(line)
            if found := re.search(pattern, line):
                return found

    try:
        key = (await asyncio.wait_for(until(r"^API key:\s+(\S+)"), STATE_TIMEOUT)).group(1)
        # As make run says to try it, the moved ports named (CJO_<SERVICE>_TARGET).
        tried = (await asyncio.wait_for(until(r"^try:\s+(.*) \.venv/bin/python"),
                                        STATE_TIMEOUT)).group(1).split()
        told = dict(word.split("=", 1) for word in tried)
        assert told == {"CJO_API_KEY": key, **{f"CJO_{name.upper()}_TARGET": f"127.0.0.1:{port}"
                                               for name, port in ports.items()}}
        example = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "examples" / "first_journey.py"),
            env={**operator_environ(), **told}, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        ran = asyncio.create_task(example.communicate())
        # The development mailbox logs each email it keeps, with the file it is kept in.
        saved = (await asyncio.wait_for(until(r"saved=(\S+\.eml)"), STATE_TIMEOUT)).group(1)
        drain = asyncio.create_task(until(r"(?!)"))  # a full pipe would stall the supervisor
        output = (await asyncio.wait_for(ran, STATE_TIMEOUT))[0].decode()
        assert example.returncode == 0, output + "".join(lines[-60:])
        assert "MESSAGE_STATUS_SENT" in output
        assert "Welcome to Acme, Ada!" in Path(saved).read_text(errors="replace")
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(proc.communicate(), STATE_TIMEOUT))[0].decode()
        assert proc.returncode == 0, "".join(lines[-60:]) + rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
