"""A secret changed alone in a manifest (review rimport): secrets are never read back, so it is
no difference; `cjo apply` says it was not compared, and `--rotate-secrets` sends it."""

from __future__ import annotations

from typing import Any

from cjo_cli.apply import _secrets
from cjo_cli.compare import compare

STORED = {"identity_verification": {"required": True, "secret_set": True}, "merge_limit": 10}
ROTATED = {"identity_verification": {"required": True, "secret": "B" * 40}, "merge_limit": 10}


def held(desired: dict[str, Any], rotate: bool) -> tuple[list[str], str]:
    _, paths = compare(STORED, desired, {})
    return _secrets(STORED, desired, paths, rotate)


def test_a_secret_the_server_holds_is_sent_when_rotating() -> None:
    assert held(ROTATED, rotate=True) == (["identity_verification"], "")


def test_a_secret_the_server_holds_is_never_silently_kept() -> None:
    paths, note = held(ROTATED, rotate=False)
    assert paths == []
    assert note == ("identity_verification.secret not compared (the server holds one); "
                    "--rotate-secrets sends it")


def test_a_secret_sent_with_its_field_needs_no_note() -> None:
    changed = {**ROTATED, "identity_verification": {"required": False, "secret": "B" * 40}}
    assert held(changed, rotate=False) == (["identity_verification"], "")
    assert held({"merge_limit": 10}, rotate=False) == (["identity_verification"], "")
