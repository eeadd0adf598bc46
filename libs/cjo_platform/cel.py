"""CEL (Common Expression Language) for conditions, filters and segment rules.

Expressions are compiled once and cached (the Rust core evaluates ~50,000 small expressions per
second on one core here; compiling is the expensive part). Validation reports the position of a
syntax error and any variable the caller does not provide, so a bad expression is refused when it
is saved, never when a customer's journey reaches it.

What can be known without data is refused at save time too: every compiled expression is
evaluated once with none of its variables bound. Evaluation stops at the first variable it
reads ("undefined variable"), so any other error of that trial comes from a part of the
expression that reads no data (``1/0``, ``[1, 2][5]``, ``9223372036854775807 + 1``,
``uint(-1)``, ``int("x")``, an unknown function) and fails for every person: the save is refused
naming the field. Errors that depend on data (a missing key, a field of the wrong type) are not
refused; at run time *every* evaluation error, whatever the Rust core raises, is a
:class:`CelEvaluationError`, and a condition that errs does not hold.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import cel

from cjo_platform.errors import InvalidArgument

MAX_EXPRESSION_LENGTH = 4096
MAX_COMPREHENSION_NESTING = 2
"""Comprehensions (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) inside each other:
their cost multiplies (three nested over lists of 300 literals take ~15 s, in a server's event
loop), so deeper nesting is refused when saved; two cover lists of lists of a profile's data."""
_POSITION = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']*)'")
# A string literal (any CEL quoting; raw and bytes prefixes leave the quotes as they are), or a
# comprehension's opening, or another bracket.
_LITERAL = "|".join([r"'''.*?'''", r'""".*?"""', r"'(?:\\.|[^'\\\n])*'", r'"(?:\\.|[^"\\\n])*"'])
_LITERALS = re.compile(_LITERAL, re.DOTALL)
_ITERATION_VARIABLE = re.compile(
    r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_TOKENS = re.compile(rf"({_LITERAL})|\.\s*(all|exists_one|exists|map|filter)\s*\(|([()\[\]{{}}])",
                     re.DOTALL)


class CelEvaluationError(Exception):
    """An expression failed at run time (missing field, type mismatch, division by zero ...)."""


@dataclass(frozen=True)
class Expression:
    source: str
    program: Any  # cel.Program
    variables: frozenset[str]
    # Why the expression fails whatever the data is (None when it does not): found by the trial
    # evaluation at compile time.
    static_error: str | None = None

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        try:
            return self.program.execute(dict(activation))
        except Exception as exc:
            # The Rust core raises ZeroDivisionError, IndexError, OverflowError, KeyError,
            # TypeError, ValueError, RuntimeError ... none of them is the caller's bug.
            raise CelEvaluationError(f"{self.source!r}: {exc}") from exc

    def test(self, activation: Mapping[str, Any]) -> bool:
        """Evaluate a condition. Anything but ``true`` (including an error such as a missing
        field) is false: a condition about data a person does not have does not hold for them."""
        try:
            return self.evaluate(activation) is True
        except CelEvaluationError:
            return False


def _describe(error: str) -> str:
    """'line L, column C: message' from the CEL parser's report."""
    for line in error.splitlines():
        match = _POSITION.search(line)
        if match:
            row, column, message = match.groups()
            return f"line {row}, column {column}: {message.strip()}"
    return error.splitlines()[0] if error else "invalid expression"


def _comprehension_nesting(source: str) -> int:
    """How deeply comprehensions nest in ``source`` (string literals skipped)."""
    stack: list[bool] = []  # per open bracket: does it open a comprehension?
    deepest = 0
    for match in _TOKENS.finditer(source):
        literal, macro, bracket = match.groups()
        if literal:
            continue
        if macro or bracket in ("(", "[", "{"):
            stack.append(bool(macro))
            deepest = max(deepest, sum(stack))
        elif stack:
            stack.pop()
    return deepest


def _static_error(source: str, program: Any, variables: frozenset[str]) -> str | None:
    """The error the expression raises whatever its variables hold, if any (see the module
    docstring): a trial evaluation with no variable bound; or why it is not tried."""
    if _comprehension_nesting(source) > MAX_COMPREHENSION_NESTING:
        return (f"comprehensions (all, exists, exists_one, map, filter) nest at most "
                f"{MAX_COMPREHENSION_NESTING} deep")
    try:
        program.execute({})
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        undefined = _UNDEFINED.search(message)
        if undefined is not None:
            name = undefined.group(1)
            return None if name in variables else f"unknown function or variable {name}"
        return f"fails for any data: {message}"
    return None


def _iteration_variables(source: str) -> set[str]:
    """The variables comprehensions bind (``o`` in ``orders.exists(o, ...)``): the compiler
    lists them among the expression's variables, but no caller provides them."""
    return set(_ITERATION_VARIABLE.findall(_LITERALS.sub('""', source)))


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> Expression:
    program = cel.compile(source)
    named = frozenset(program.variables())
    return Expression(source, program, named - _iteration_variables(source),
                      _static_error(source, program, named))


def load_expression(source: str, field: str) -> Expression:
    """An expression saved earlier, to evaluate: compiled (or fetched from the cache) without
    refusing what :func:`compile_expression` refuses at save time; a definition saved before a
    check existed then simply errs when evaluated (and a condition that errs does not hold).
    INVALID_ARGUMENT on ``field`` only when it does not parse at all."""
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise InvalidArgument.one(field, f"at most {MAX_EXPRESSION_LENGTH} characters")
    try:
        return _compile(source)
    except Exception as exc:
        raise InvalidArgument.one(field, _describe(str(exc))) from None


def compile_expression(source: str, field: str,
                       allowed: Collection[str] | None = None) -> Expression:
    """Compile (or fetch from the cache) ``source`` to save it; INVALID_ARGUMENT on ``field``
    when it does not parse, is too long, reads a variable outside ``allowed``, or fails whatever
    the data is (see the module docstring)."""
    if not source.strip():
        raise InvalidArgument.one(field, "is empty")
    expression = load_expression(source, field)
    if allowed is not None:
        unknown = sorted(expression.variables - set(allowed))
        if unknown:
            raise InvalidArgument.one(
                field, f"unknown variable {', '.join(unknown)}; available: "
                       f"{', '.join(sorted(allowed))}")
    if expression.static_error is not None:
        raise InvalidArgument.one(field, expression.static_error)
    return expression
