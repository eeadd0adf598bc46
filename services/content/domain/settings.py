"""Content settings of a workspace: the default locale that ends every fallback chain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from cjo_content.domain.content_items import etag_of
from cjo_content.domain.locales import DEFAULT_LOCALE, is_bcp47
from cjo_platform.errors import InvalidArgument, Violations

SETTINGS_NAME = "contentSettings"
SETTINGS_PATHS = ("default_locale",)
BCP47_HINT = "must be a BCP 47 language tag such as 'en' or 'ko-KR'"


@dataclass(frozen=True)
class ContentSettings:
    """``revision`` 0 and no ``update_time``: the workspace never changed its settings."""

    default_locale: str = DEFAULT_LOCALE
    revision: int = 0
    update_time: datetime | None = None

    @property
    def etag(self) -> str:
        return etag_of("content-settings", self.revision)


def check_settings_name(name: str, field_path: str) -> None:
    if name and name != SETTINGS_NAME:
        raise InvalidArgument.one(field_path, f"must be {SETTINGS_NAME!r}")


def parse_settings_mask(paths: Sequence[str], field_path: str = "update_mask") -> frozenset[str]:
    problems = Violations()
    problems.check(bool(paths), field_path,
                   f"is required; allowed paths: {', '.join(SETTINGS_PATHS)}")
    for path in paths:
        problems.check(path in SETTINGS_PATHS, field_path,
                       f"unknown path {path!r}; allowed: {', '.join(SETTINGS_PATHS)}")
    problems.raise_if_any()
    return frozenset(paths)


def apply_settings_update(current: ContentSettings, patch: ContentSettings,
                          mask: frozenset[str]) -> ContentSettings:
    """``current`` with the masked fields of ``patch``; INVALID_ARGUMENT naming the field
    (relative to the settings message) when a new value is not valid."""
    problems = Violations()
    result = current
    if "default_locale" in mask:
        problems.check(is_bcp47(patch.default_locale), "default_locale", BCP47_HINT)
        result = replace(result, default_locale=patch.default_locale)
    problems.raise_if_any()
    return result
