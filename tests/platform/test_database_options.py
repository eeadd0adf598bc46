"""A PostgreSQL Database keeps the server options its URL or PGOPTIONS give beside the
search_path it sets for the service's schema (libpq's ``options`` replaced both: a
``?options=-c statement_timeout=...`` in CJO_DATABASE_URL was silently dropped)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from cjo_platform.db import Database
from support import PG_URL, Backend

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def settings(url: str, schema: str) -> tuple[str, str]:
    database = Database(url, schema=schema)
    try:
        with database.engine.connect() as connection:
            return (connection.execute(text("SHOW statement_timeout")).scalar_one(),
                    connection.execute(text("SELECT current_setting('search_path')"))
                    .scalar_one())
    finally:
        database.dispose()


def test_the_urls_options_are_kept(backend: Backend) -> None:
    separator = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{separator}options=-c%20statement_timeout%3D4321"
    assert settings(url, backend.schema_prefix + "opts") == ("4321ms",
                                                             backend.schema_prefix + "opts")


def test_pgoptions_are_kept(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=1234")
    assert settings(PG_URL, backend.schema_prefix + "opts") == ("1234ms",
                                                                backend.schema_prefix + "opts")
