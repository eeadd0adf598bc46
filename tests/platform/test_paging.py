"""Page tokens are opaque to callers but decoded from their input: anything but a token the
service made is INVALID_ARGUMENT on the token's field."""

from __future__ import annotations

import base64
import json

import pytest

from cjo_platform.errors import InvalidArgument
from cjo_platform.paging import decode_token, encode_token


def raw(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def test_a_token_round_trips() -> None:
    cursor = {"after": "p-1", "t": "2026-03-01T12:00:00+00:00"}
    assert decode_token(encode_token(cursor)) == cursor
    assert decode_token("") is None


@pytest.mark.parametrize("token", [
    "not a token", raw([1, 2]), raw("after"),
    # The database refuses NUL: a crafted cursor holding one must not reach it.
    raw({"after": "\x00"}), raw({"a\x00": "x"}), raw({"after": ["x", {"y": "\x00"}]}),
])
def test_anything_else_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_token(token, "page_token")
    assert caught.value.violations[0].field == "page_token"
