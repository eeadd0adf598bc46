"""How identity reads a number out of an event's properties, wherever it sums or values one
(a SUM computed trait, a conversion's revenue): JSON numbers and numeric strings alike, since a
CSV import (`cjo import`) or a form sends every value as a string."""

from __future__ import annotations

import math
import re
from typing import Any

# A decimal number in ASCII digits, as JSON writes one (not "1_000", "1,000", "0x10" nor
# fullwidth digits): float() alone also reads underscores and any script's digits.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def parse_number(value: Any) -> float | None:
    """``value`` as a finite float: an int or float, or a string holding one in ASCII digits
    ("19.99", " 5 ", "1e3"); None for anything else (booleans, other strings, NaN and
    infinities, which no JSON column can store)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _NUMBER.fullmatch(text):
            return None
        number = float(text)
    else:
        return None
    return number if math.isfinite(number) else None
