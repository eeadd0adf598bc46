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
:class:`CelEvaluationError`. :meth:`Expression.holds` sorts them for conditions: missing data or
a value of another type (:func:`is_missing_data`) does not hold, anything else is an error the
caller records on the item (segments and journeys follow this one rule).

Cost is bounded (:data:`MAX_COST`) before anything runs: what comprehensions over literal lists
cost is known from the text, and an expression over the bound is refused when saved without the
trial evaluation; over data, the bound is checked with the data before each evaluation.
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
MAX_COST = 100_000
"""The most work one evaluation may do, in :func:`cost` units (about one step of the CEL core,
0.3-1.3 µs here): ~0.1 s at worst. Comprehensions are where the work is: each runs its body once
per element of its range, ``map`` and ``filter`` also copy their growing result once per element
(so they are quadratic in the range), and a nested one runs whole for every element of the
outer. The bound is checked without data when an expression is compiled (ranges over literal
lists: an expression over more is refused when saved, and a saved one errs without running), and
again with the data before every evaluation that ranges over data: a list in the data as long as
``d`` counts ``d`` elements, so a comprehension too costly for one person's data errs for that
person (a recorded error on that item), never holds a worker."""
_POSITION = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']*)'")
# A string literal (any CEL quoting; raw and bytes prefixes leave the quotes as they are), or a
# comprehension's opening, or another bracket.
_LITERAL = "|".join([r"'''.*?'''", r'""".*?"""', r"'(?:\\.|[^'\\\n])*'", r'"(?:\\.|[^"\\\n])*"'])
_LITERALS = re.compile(_LITERAL, re.DOTALL)
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_ACCUMULATING = frozenset({"map", "filter"})
_ITERATION_VARIABLE = re.compile(
    r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
# Tokens as far as cost and nesting need them: a literal (string or number), a name, or one
# character of punctuation (brackets, '.', ',' and operators).
_TOKEN = re.compile(rf"({_LITERAL})|(0[xX][0-9a-fA-F]+[uU]?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?)"
                    r"|([A-Za-z_][A-Za-z0-9_]*)|(\S)", re.DOTALL)
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = frozenset(_OPEN.values())



class CelEvaluationError(Exception):
    """An expression failed at run time (missing field, type mismatch, division by zero ...)."""


def is_missing_data(error: BaseException) -> bool:
    """Whether an evaluation failed on the person's data rather than on the expression: a key
    the data lacks (``traits.plan`` for a profile without a plan: KeyError) or a value of
    another type than the expression expects (``traits.age > 30`` with age null or "42": "no
    such overload", TypeError), also when wrapped in a :class:`CelEvaluationError`. A condition
    about data a person does not have does not hold for them; anything else (a division by
    zero, a failed conversion, an overflow, an index out of bounds, an evaluation too costly
    for the data) is an error, recorded on the item it was evaluated for."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, KeyError | TypeError):
            return True
        seen = seen.__cause__
    return False


@dataclass(frozen=True)
class _Comprehension:
    """One comprehension, as the counts its cost is bounded by."""

    accumulates: bool  # map and filter copy their growing result once per element
    range_literals: int  # elements of list and map literals in its range expression
    range_data: int  # reads of the caller's variables there: each a list up to the data's longest
    range_iterated: int  # reads of iteration variables there: each up to any list's length
    body: int  # tokens of its body: the work per element (literal lists included)
    inner: tuple[_Comprehension, ...]  # comprehensions in its body: run whole per element

    def units(self, longest_data: int, longest_any: int) -> int:
        size = (self.range_literals + self.range_data * longest_data
                + self.range_iterated * longest_any)
        per_element = self.body + sum(c.units(longest_data, longest_any) for c in self.inner)
        return size * per_element + (size * size if self.accumulates else 0)

    @property
    def depth(self) -> int:
        return 1 + max((c.depth for c in self.inner), default=0)


@dataclass(frozen=True)
class Cost:
    """A bound on the work of one evaluation (see :data:`MAX_COST`), read from the expression's
    text: the CEL core builds lists only from literals, ``+``, ``map`` and ``filter``, so no list
    is longer than the expression's literal elements plus, per read of a variable, the data's
    longest list; a comprehension's range is bounded by what its range expression reads."""

    tokens: int
    literals: int
    data_reads: int
    comprehensions: tuple[_Comprehension, ...] = ()

    @property
    def nesting(self) -> int:
        return max((c.depth for c in self.comprehensions), default=0)

    @property
    def depends_on_data(self) -> bool:
        """Whether a comprehension may range over data (then the bound needs the data)."""
        return bool(self.comprehensions) and self.data_reads > 0

    def units(self, longest: int = 0) -> int:
        """The bound when the data's longest list (or map) has ``longest`` elements."""
        longest_any = self.literals + self.data_reads * longest
        return self.tokens + sum(c.units(longest, longest_any) for c in self.comprehensions)


def _ends_operand(token: tuple[str, str]) -> bool:
    kind, text = token
    return kind == "literal" or (kind == "name" and text != "in") or text in _CLOSE


def cost(source: str, data_variables: Collection[str] = (),
         iteration_variables: Collection[str] = ()) -> Cost:
    """The :class:`Cost` of ``source`` (an expression that compiles)."""
    tokens: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(source):
        string, number, name, punctuation = match.groups()
        kind = "literal" if string or number else "name" if name else "punctuation"
        tokens.append((kind, name or punctuation or ""))
    end = len(tokens)
    partner: dict[int, int] = {}
    commas: dict[int, int] = {}
    stack: list[int] = []
    for index, (kind, text) in enumerate(tokens):
        if kind != "punctuation":
            continue
        if text in _OPEN:
            stack.append(index)
            commas[index] = 0
        elif text in _CLOSE and stack:
            opening = stack.pop()
            partner[opening], partner[index] = index, opening
        elif text == "," and stack:
            commas[stack[-1]] += 1
    for opening in stack:  # unbalanced (cannot be: it compiled): up to the end
        partner[opening] = end
    # Elements of each list and map literal (an index a[i] is no literal), by opening position.
    elements = {i: commas[i] + 1 for i in commas
                if partner[i] > i + 1 and (tokens[i][1] == "{" or (
                    tokens[i][1] == "[" and not (i > 0 and _ends_operand(tokens[i - 1]))))}

    def reads(first: int, last: int, names: Collection[str]) -> int:
        return sum(1 for i in range(first, last) if tokens[i][0] == "name"
                   and tokens[i][1] in names and not (i > 0 and tokens[i - 1][1] == "."))

    def literals(first: int, last: int) -> int:
        return sum(count for i, count in elements.items() if first <= i < last)

    # Each comprehension: (position of its '.', body start, body end, range start, macro).
    found: list[tuple[int, int, int, int, str]] = []
    for i in range(end - 2):
        if (tokens[i] == ("punctuation", ".") and tokens[i + 1][0] == "name"
                and tokens[i + 1][1] in _MACROS and tokens[i + 2] == ("punctuation", "(")):
            close = partner[i + 2]
            j = i + 3
            while j < close and tokens[j][1] != ",":
                j = partner.get(j, j) + 1 if tokens[j][1] in _OPEN else j + 1
            start = i - 1
            while start >= 0:
                kind, text = tokens[start]
                if text in _CLOSE and start in partner:
                    start = partner[start] - 1
                elif kind == "literal" or (kind == "name" and text != "in") or text == ".":
                    start -= 1
                else:
                    break
            found.append((i, j + 1, close, start + 1, tokens[i + 1][1]))

    def within(first: int, last: int) -> tuple[_Comprehension, ...]:
        """The comprehensions in [first, last) that are in no other one's body there."""
        mine = [c for c in found if first <= c[0] < last]
        outer = [c for c in mine
                 if not any(o[1] <= c[0] < o[2] for o in mine if o is not c)]
        return tuple(_Comprehension(
            accumulates=macro in _ACCUMULATING, range_literals=literals(begin, dot),
            range_data=reads(begin, dot, data_variables),
            range_iterated=reads(begin, dot, iteration_variables),
            body=max(body_end - body_start, 1), inner=within(body_start, body_end))
            for dot, body_start, body_end, begin, macro in outer)

    return Cost(tokens=end, literals=literals(0, end), data_reads=reads(0, end, data_variables),
                comprehensions=within(0, end))


def _longest(values: Any) -> int:
    """The length of the longest list or map in ``values`` (nested ones included)."""
    longest = 0
    pending = [values]
    while pending:
        value = pending.pop()
        if isinstance(value, Mapping):
            longest = max(longest, len(value))
            pending.extend(value.values())
        elif isinstance(value, list | tuple | set | frozenset):
            longest = max(longest, len(value))
            pending.extend(value)
    return longest


@dataclass(frozen=True)
class Expression:
    source: str
    program: Any  # cel.Program
    variables: frozenset[str]
    # Why the expression fails whatever the data is (None when it does not): found by the trial
    # evaluation at compile time, or the static cost bound.
    static_error: str | None = None
    cost: Cost = Cost(0, 0, 0)

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        """The expression's value for ``activation``; :class:`CelEvaluationError` when it fails,
        or without running it when it would cost more than :data:`MAX_COST` for this data."""
        units = self.cost.units(
            _longest([activation.get(name) for name in self.variables])
            if self.cost.depends_on_data else 0)
        if units > MAX_COST:
            raise CelEvaluationError(f"{self.source!r}: too costly for this data (about "
                                     f"{units:,} steps, at most {MAX_COST:,}); not evaluated")
        try:
            return self.program.execute(dict(activation))
        except Exception as exc:
            # The Rust core raises ZeroDivisionError, IndexError, OverflowError, KeyError,
            # TypeError, ValueError, RuntimeError ... none of them is the caller's bug.
            raise CelEvaluationError(f"{self.source!r}: {exc}") from exc

    def holds(self, activation: Mapping[str, Any]) -> bool:
        """Evaluate a condition: whether it is ``true``; false too when it fails on data the
        person lacks or has in another type (:func:`is_missing_data`). Any other failure raises
        :class:`CelEvaluationError`: an error for the caller to record on the item."""
        try:
            return self.evaluate(activation) is True
        except CelEvaluationError as exc:
            if is_missing_data(exc):
                return False
            raise

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


def _static_error(program: Any, variables: frozenset[str], bound: Cost) -> str | None:
    """The error the expression raises whatever its variables hold, if any (see the module
    docstring): a trial evaluation with no variable bound; or why it is not tried (it nests
    too deep or costs too much whatever the data)."""
    if bound.nesting > MAX_COMPREHENSION_NESTING:
        return (f"comprehensions (all, exists, exists_one, map, filter) nest at most "
                f"{MAX_COMPREHENSION_NESTING} deep")
    units = bound.units()
    if units > MAX_COST:
        return (f"too costly: about {units:,} steps whatever the data, at most {MAX_COST:,} "
                f"(comprehensions over long literal lists)")
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


_SELECT = re.compile(r"(?<![\w.])([A-Za-z_][A-Za-z0-9_]*)\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)"
                     r"|\[\s*(?:'([^'\\]*)'|\"([^\"\\]*)\")\s*\])")


def fields_read(source: str, variable: str) -> set[str]:
    """The fields of ``variable`` that ``source`` reads by name: ``x`` in ``journey.x`` and in
    ``journey["x"]`` (not inside a string literal), so a caller offering a variable with a fixed
    set of fields can refuse an unknown one when the expression is saved."""
    found: set[str] = set()
    # Literals are blanked rather than removed, so an index's key stays readable: keys are
    # matched on the original text at the positions the blanked text says are code.
    blanked = _LITERALS.sub(lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2)
                            + m.group(0)[-1], source)
    for match in _SELECT.finditer(blanked):
        if match.group(1) != variable:
            continue
        if match.group(2):
            found.add(match.group(2))
        else:  # an index with a string key: read the key from the original text
            original = _SELECT.match(source, match.start())
            if original is not None and original.group(1) == variable:
                found.add(original.group(3) if original.group(3) is not None
                          else original.group(4) or "")
    return found


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> Expression:
    program = cel.compile(source)
    named = frozenset(program.variables())
    iterated = _iteration_variables(source)
    bound = cost(source, named - iterated, iterated)
    return Expression(source, program, named - iterated, _static_error(program, named, bound),
                      bound)


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
