"""How identity reads a number out of an event's properties, wherever it sums or values one
(a SUM computed trait, a conversion's revenue): JSON numbers and numeric strings alike, since a
CSV import (`cjo import`) or a form sends every value as a string."""

from __future__ import annotations

import math
from typing import Any


def parse_number(value: Any) -> float | None:
    """``value`` as a finite float: an int or float, or a string holding one ("19.99",
    " 5 "); None for anything else (booleans, other strings, NaN and infinities, which no JSON
    column can store)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None
