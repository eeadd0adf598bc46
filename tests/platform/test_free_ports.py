"""free_port() across test processes: a port another test process was handed, and may not have
bound yet, is not handed out here too (two pytest runs on one machine, a helper's beside CI)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

import support

TESTS = Path(__file__).resolve().parent.parent


def test_a_port_another_process_was_given_is_not_given_here_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process takes a port and holds it, unbound, as a test does until its server
    # starts.
    other = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, support; print(support.free_port(), flush=True); sys.stdin.read()"],
        cwd=TESTS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        theirs = int(other.stdout.readline())
        # This process draws the same port first.
        draws = iter([theirs])
        draw = random.randint
        monkeypatch.setattr(support.random, "randint",
                            lambda a, b: next(draws, None) or draw(a, b))
        assert support.free_port() != theirs
    finally:
        other.communicate("")
