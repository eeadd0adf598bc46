"""SMS encoding and segment counting (GSM 03.38), what providers bill for."""

from __future__ import annotations

import math
from enum import Enum

# The GSM 03.38 basic character set (one septet each).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
# The extension table: an escape septet plus one, so each counts double.
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")


class SmsEncoding(Enum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


def sms_encoding(text: str) -> tuple[SmsEncoding, int]:
    """The encoding ``text`` needs and the number of segments it is sent in: GSM-7 fits 160
    septets in one segment and 153 per segment when split; UCS-2 fits 70 UTF-16 code units,
    67 when split. Empty text is 0 segments."""
    septets = 0
    for char in text:
        if char in _GSM_BASIC:
            septets += 1
        elif char in _GSM_EXTENSION:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return SmsEncoding.UCS2, _segments(units, 70, 67)
    return SmsEncoding.GSM7, _segments(septets, 160, 153)


def _segments(units: int, single: int, split: int) -> int:
    if units == 0:
        return 0
    return 1 if units <= single else math.ceil(units / split)
