"""Blocked-value patterns are the workspace's own regular expressions, matched against every
identifier of every event. Python's backtracking engine can take exponential time on a pattern
whose repetition nests another variable repetition (``(a+)+``, ``(\\w*)*x``): one such pattern
and one 40-character identifier hold a worker thread and a core for hours, for every
workspace. Such patterns are refused when saved; no blocked value needs one."""

from __future__ import annotations

import re
from re import _constants as ops  # type: ignore[attr-defined]
from re import _parser as parser  # type: ignore[attr-defined]
from typing import Any

FEW = 16

NESTED_REPETITION = ("repeats a part that itself repeats a variable number of times "
                     "(e.g. (a+)+), which can take exponential time to match; write it "
                     "without the nesting (e.g. a+)")


def nested_repetition(pattern: str) -> bool:
    """Whether ``pattern`` (a valid regular expression) repeats a variable-length repetition.
    Possessive repetitions and atomic groups never backtrack and are allowed."""
    try:
        tree = parser.parse(pattern)
    except re.error:
        return False  # not this check's business: the caller reports invalid patterns
    return _walk(tree, inside_repeat=False)


def _walk(items: Any, inside_repeat: bool) -> bool:
    for op, av in items:
        if op in (ops.MAX_REPEAT, ops.MIN_REPEAT):
            low, high, body = av
            if inside_repeat and low != high:
                return True
            # A few repeats of a variable part cost little; many (or unbounded) explode.
            if _walk(body, inside_repeat or high > FEW):
                return True
            continue
        if op is ops.SUBPATTERN:
            parts = [av[3]]
        elif op is ops.BRANCH:
            parts = list(av[1])
        elif op in (ops.ASSERT, ops.ASSERT_NOT):
            parts = [av[1]]
        elif op is ops.GROUPREF_EXISTS:
            parts = [branch for branch in av[1:] if branch is not None]
        else:
            parts = []
        if any(_walk(part, inside_repeat) for part in parts):
            return True
    return False
