"""JSON columns (encoded with msgspec, see cjo_platform.db.json_columns) read back what was
written, on both backends and through both insert paths; the stored text is compact UTF-8 JSON
(readable in the database); documents an older version wrote with the standard library (``NaN``
included, on SQLite) still read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select, text

from cjo_platform.db import Database
from cjo_platform.db.bulk import bulk_insert
from support import Backend

metadata = MetaData()
docs = Table("docs", metadata, Column("id", Integer, primary_key=True), Column("doc", JSON))

VALUES: list[Any] = [
    {"name": "Zoë", "n": 1, "x": 1.5, "big": 2**70, "tiny": 5e-324, "neg": -0.0,
     "list": [1, "a", None, True, {"deep": []}], "quote": "a\"b\\c\n"},
    [], "plain", 42, None,
]


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/json.db")
    database = Database(url, schema=backend.schema_prefix + "json")
    database.create_schema()
    metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.mark.parametrize("path", ["insert", "bulk"])
def test_values_read_back_as_written(db: Database, path: str) -> None:
    rows = [{"id": n, "doc": value} for n, value in enumerate(VALUES)]
    with db.transaction() as session:
        if path == "bulk":
            bulk_insert(session, docs, rows, copy_threshold=1)
        else:
            session.execute(insert(docs), rows)
    with db.transaction() as session:
        found = session.scalars(select(docs.c.doc).order_by(docs.c.id)).all()
    assert found == VALUES
    assert str(found[0]["neg"]) == "-0.0" and isinstance(found[0]["big"], int)


def test_the_stored_text_is_compact_utf8(db: Database) -> None:
    with db.transaction() as session:
        session.execute(insert(docs), [{"id": 1, "doc": {"name": "Zoë", "tags": ["a", 1]}}])
        stored = session.execute(text("SELECT CAST(doc AS TEXT) FROM docs")).scalar_one()
    assert stored == '{"name":"Zoë","tags":["a",1]}'


def test_documents_the_standard_library_wrote_still_read(db: Database) -> None:
    legacy = ['{"a": 1, "b": [1.5, "\\u00e9"]}']
    if db.is_sqlite:
        legacy.append('{"x": NaN}')  # PostgreSQL's json never held one
    with db.transaction() as session:
        for n, document in enumerate(legacy):
            session.execute(text("INSERT INTO docs (id, doc) VALUES (:id, :doc)"),
                            {"id": n, "doc": document})
    with db.transaction() as session:
        found = session.scalars(select(docs.c.doc).order_by(docs.c.id)).all()
    assert found[0] == {"a": 1, "b": [1.5, "é"]}
    if db.is_sqlite:
        assert found[1]["x"] != found[1]["x"]  # NaN
