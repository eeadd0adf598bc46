"""Locales: BCP 47 tags, the fallback chain, and Liquid filters that format money, numbers
and dates the way the render's locale writes them (Babel, CLDR data)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import babel
from babel import dates, numbers
from liquid.exceptions import FilterArgumentError
from liquid.filter import with_context

DEFAULT_LOCALE = "en"

# language[-script][-region][-variant...], the subset of BCP 47 that content uses.
_BCP47 = re.compile(
    r"[A-Za-z]{2,3}(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?(?:-(?:[A-Za-z0-9]{5,8}"
    r"|[0-9][A-Za-z0-9]{3}))*")


def is_bcp47(tag: str) -> bool:
    return _BCP47.fullmatch(tag) is not None


def fallback_chain(requested: str, default: str = DEFAULT_LOCALE) -> list[str]:
    """``ko-KR`` -> [``ko-KR``, ``ko``, default]: each subtag dropped in turn, then the default."""
    chain: list[str] = []
    parts = requested.split("-") if requested and is_bcp47(requested) else []
    while parts:
        chain.append("-".join(parts))
        parts.pop()
    if default not in chain:
        chain.append(default)
    return chain


def _subtags(tag: str) -> list[str]:
    """``zh-Hant-TW`` -> [``zh-Hant-TW``, ``zh-Hant``, ``zh``]; [] for an empty or bad tag."""
    parts = tag.split("-") if tag and is_bcp47(tag) else []
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


@lru_cache(maxsize=1024)
def locale_chain(requested: str, item_default: str, workspace_default: str,
                 ) -> tuple[str, ...]:
    """The locales a render tries, in order, for a body: the requested locale and its parents,
    then ``""`` (the item's own base bodies) when the item sets ``item_default``, then the
    workspace default and its parents. ``ko-KR`` with workspace ``en`` -> (ko-KR, ko, en)."""
    chain: list[str] = []
    seen: set[str] = set()
    for tag in _subtags(requested):
        if tag.lower() not in seen:
            seen.add(tag.lower())
            chain.append(tag)
    if item_default:
        chain.append("")
        return tuple(chain)
    for tag in _subtags(workspace_default):
        if tag.lower() not in seen:
            seen.add(tag.lower())
            chain.append(tag)
    return tuple(chain)


@lru_cache(maxsize=512)
def _babel_locale(tag: str) -> babel.Locale:
    try:
        return babel.Locale.parse(tag, sep="-")
    except (ValueError, babel.UnknownLocaleError):
        return babel.Locale.parse(DEFAULT_LOCALE)


def _render_locale_tag(context: Any) -> str:
    tag = context.globals.get("locale") if hasattr(context, "globals") else None
    return tag if isinstance(tag, str) and tag else DEFAULT_LOCALE


def _decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool):
        raise FilterArgumentError(f"{name}: {value!r} is not a number", token=None)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        number = Decimal("NaN")
    if number.is_finite():
        return number
    raise FilterArgumentError(f"{name}: {value!r} is not a number", token=None)


# Babel's formatting walks CLDR data on every call (~50 us). A render formats a handful of
# amounts, so each (locale, currency) gets a compiled formatter instead: Python's own grouping
# and rounding (half-even, like Babel) with the locale's symbols and affixes. A formatter is
# only used after it matched Babel on probe values; otherwise Babel formats (e.g. Indian
# 3;2 grouping or non-Latin digits).
_PROBES = tuple(Decimal(v) for v in ("0", "7", "12.5", "0.125", "999.995", "1234567.891",
                                     "-1234.5", "-0.5", "100000000"))
Formatter = Callable[[Decimal], str]


def _verified(fast: Formatter, slow: Formatter) -> Formatter:
    try:
        if all(fast(probe) == slow(probe) for probe in _PROBES):
            return fast
    except (ArithmeticError, ValueError, KeyError):
        pass
    return slow


def _affixes(pattern: Any, symbol: str) -> tuple[str, str, str, str]:
    pos_prefix, neg_prefix = (p.replace("¤", symbol) for p in pattern.prefix)
    pos_suffix, neg_suffix = (p.replace("¤", symbol) for p in pattern.suffix)
    return pos_prefix, pos_suffix, neg_prefix, neg_suffix


@lru_cache(maxsize=2048)
def _money_formatter(tag: str, currency: str) -> Formatter:
    locale = _babel_locale(tag)

    def slow(value: Decimal) -> str:
        return numbers.format_currency(value, currency, locale=locale)

    try:
        pattern = locale.currency_formats["standard"]
        digits = numbers.get_currency_precision(currency)
        symbol = numbers.get_currency_symbol(currency, locale)
        table = str.maketrans({",": numbers.get_group_symbol(locale),
                               ".": numbers.get_decimal_symbol(locale)})
    except (KeyError, ValueError, babel.UnknownLocaleError):
        return slow
    if pattern.grouping != (3, 3):
        return slow
    pos_prefix, pos_suffix, neg_prefix, neg_suffix = _affixes(pattern, symbol)

    def fast(value: Decimal) -> str:
        text = f"{abs(value):,.{digits}f}".translate(table)
        if value < 0:
            return neg_prefix + text + neg_suffix
        return pos_prefix + text + pos_suffix

    return _verified(fast, slow)


_THOUSANDTH = Decimal("0.001")


@lru_cache(maxsize=512)
def _number_formatter(tag: str) -> Formatter:
    locale = _babel_locale(tag)

    def slow(value: Decimal) -> str:
        return numbers.format_decimal(value, locale=locale)

    pattern = locale.decimal_formats[None]
    if pattern.grouping != (3, 3) or pattern.frac_prec != (0, 3):
        return slow
    table = str.maketrans({",": numbers.get_group_symbol(locale),
                           ".": numbers.get_decimal_symbol(locale)})
    pos_prefix, pos_suffix, neg_prefix, neg_suffix = _affixes(pattern, "")
    minus = numbers.get_minus_sign_symbol(locale)
    neg_prefix = neg_prefix.replace("-", minus)

    def fast(value: Decimal) -> str:
        rounded = value.quantize(_THOUSANDTH)
        text = f"{abs(rounded):,f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        text = text.translate(table)
        if rounded < 0:
            return neg_prefix + text + neg_suffix
        return pos_prefix + text + pos_suffix

    return _verified(fast, slow)


@with_context
def money(value: object, currency: str = "USD", *, context: Any) -> str:
    """``{{ 1234.5 | money: "EUR" }}`` -> ``€1,234.50`` in en, ``1.234,50 €`` in de."""
    tag = _render_locale_tag(context)
    return _money_formatter(tag, str(currency).upper())(_decimal(value, "money"))


@with_context
def number(value: object, *, context: Any) -> str:
    """``{{ 1234567.891 | number }}`` -> ``1,234,567.891`` in en, ``1.234.567,891`` in de."""
    return _number_formatter(_render_locale_tag(context))(_decimal(value, "number"))


@lru_cache(maxsize=4096)
def _format_date(value: str | date, style: str, tag: str) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise FilterArgumentError(f"local_date: {value!r} is not an ISO date",
                                      token=None) from None
    return dates.format_date(value, format=style, locale=_babel_locale(tag))


@with_context
def local_date(value: object, style: str = "medium", *, context: Any) -> str:
    """``{{ event.at | local_date: "long" }}``: an ISO date or date-time in the locale's
    words; style is short, medium, long or full. Results are cached: the same few dates
    (an order date, a sale's end) repeat across a batch."""
    if style not in ("short", "medium", "long", "full"):
        raise FilterArgumentError(f"local_date: unknown style {style!r}", token=None)
    if not isinstance(value, str | date):
        raise FilterArgumentError(f"local_date: {value!r} is not a date", token=None)
    return _format_date(value, style, _render_locale_tag(context))


def register_locale_filters(filters: dict[str, Any]) -> None:
    filters["money"] = money
    filters["number"] = number
    filters["local_date"] = local_date
