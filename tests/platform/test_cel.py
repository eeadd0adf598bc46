from __future__ import annotations

import pytest

from cjo_platform.cel import CelEvaluationError, compile_expression
from cjo_platform.errors import InvalidArgument


def test_conditions_evaluate_against_plain_values() -> None:
    expression = compile_expression("event.cart_value > 50.0 && profile.plan == 'pro'", "f",
                                    allowed={"event", "profile"})
    assert expression.test({"event": {"cart_value": 72.5}, "profile": {"plan": "pro"}})
    assert not expression.test({"event": {"cart_value": 12.0}, "profile": {"plan": "pro"}})
    # A missing field makes the condition false, not an exception.
    assert not expression.test({"event": {}, "profile": {"plan": "pro"}})
    with pytest.raises(CelEvaluationError):
        expression.evaluate({"event": {}, "profile": {}})


def test_compiled_programs_are_cached() -> None:
    assert compile_expression("1 + 1 == 2", "f") is compile_expression("1 + 1 == 2", "g")


def test_syntax_errors_name_the_field_and_position() -> None:
    with pytest.raises(InvalidArgument) as error:
        compile_expression("event.x >", "nodes[2].branch.conditions[0]")
    violation = error.value.violations[0]
    assert violation.field == "nodes[2].branch.conditions[0]"
    assert violation.description.startswith("line 1, column 10:")


def test_unknown_variables_and_empty_expressions_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown variable secrets"):
        compile_expression("secrets.key == 'x'", "filter", allowed={"event", "profile"})
    with pytest.raises(InvalidArgument, match="is empty"):
        compile_expression("  ", "filter")
