"""``one_of`` (``column IN values``) finds exactly the rows whose column is among the values,
strings or integers, on both backends, and sends a long list as one parameter: the statement is
the same whatever the number of values (compiled once, not expanded per value at every call)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, event, insert, select

from cjo_platform.db import Database
from cjo_platform.db.engine import JSON_LIST_VALUES, keys_param, one_of, one_of_keys
from support import Backend

metadata = MetaData()
items = Table(
    "items", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("name", String(32), nullable=False, index=True),
)
ROWS = 3000
# Values an array literal must quote or escape (they match no row; "n1" would).
ODD = ["n1'; --", "ü", 'n1"', "n1\\", "{n1}", "n1,n3", "NULL", "", " n1"]


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/one_of.db")
    database = Database(url, schema=backend.schema_prefix + "one_of")
    database.create_schema()
    metadata.create_all(database.engine)
    with database.transaction() as session:
        session.execute(insert(items), [{"id": n, "name": f"n{n}"} for n in range(ROWS)])
    yield database
    database.dispose()


@pytest.mark.parametrize("size", [0, 1, JSON_LIST_VALUES - 1, JSON_LIST_VALUES, 2000])
def test_the_rows_among_the_values_and_no_other(db: Database, size: int) -> None:
    wanted = list(range(1, 2 * size, 2))  # every other row, some past the last one
    names = [f"n{n}" for n in wanted] + ["absent", *ODD]
    expected = [n for n in wanted if n < ROWS]
    with db.transaction() as session:
        by_id = session.scalars(select(items.c.id).where(one_of(session, items.c.id, wanted))
                                .order_by(items.c.id)).all()
        by_name = session.scalars(select(items.c.id).where(one_of(session, items.c.name, names))
                                  .order_by(items.c.id)).all()
    assert by_id == expected and by_name == expected


def test_a_long_list_is_one_parameter_of_one_statement(db: Database) -> None:
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        sent.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.transaction() as session:
            for size in (100, 1000):
                session.execute(select(items.c.id).where(
                    one_of(session, items.c.name, [f"n{n}" for n in range(size)])))
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    (short, short_parameters), (long, long_parameters) = sent
    assert short == long
    assert len(short_parameters) == len(long_parameters) == 1


def test_a_statement_built_once_finds_each_runs_keys(db: Database) -> None:
    with db.transaction() as session:
        dialect = session.get_bind().dialect.name
        by_id = select(items.c.id).where(one_of_keys(dialect, items.c.id)).order_by(items.c.id)
        by_name = (select(items.c.id).where(one_of_keys(dialect, items.c.name, "names"))
                   .order_by(items.c.id))
        for size in (0, 1, JSON_LIST_VALUES, 2000):
            wanted = list(range(1, 2 * size, 2))
            names = [f"n{n}" for n in wanted] + ["absent", *ODD]
            expected = [n for n in wanted if n < ROWS]
            assert session.scalars(by_id, {"keys": keys_param(dialect, wanted)}).all() \
                == expected
            assert session.scalars(by_name, {"names": keys_param(dialect, names)}).all() \
                == expected


def test_values_an_array_literal_must_quote_or_escape_find_their_rows(db: Database) -> None:
    """On PostgreSQL the values go as ONE array literal (psycopg dumps a list element by
    element in Python); quotes, backslashes, braces, commas, "NULL" and "" are each matched as
    themselves."""
    odd = [*ODD, 'a"b\\c', "\\", '"']
    with db.transaction() as session:
        session.execute(insert(items), [{"id": ROWS + i, "name": name}
                                        for i, name in enumerate(odd)])
    sent: list[Any] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        sent.append(parameters)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.transaction() as session:
            dialect = session.get_bind().dialect.name
            for name in odd:
                assert session.scalars(select(items.c.id).where(
                    one_of(session, items.c.name, [name, "absent"]))).all() \
                    == [ROWS + odd.index(name)]
            by_name = (select(items.c.id).where(one_of_keys(dialect, items.c.name))
                       .order_by(items.c.id))
            assert session.scalars(by_name, {"keys": keys_param(dialect, odd[::-1])}).all() \
                == [ROWS + i for i in range(len(odd))]
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    if dialect == "postgresql":
        assert all(isinstance(v, str) for p in sent for v in p.values())


def test_none_among_the_values_matches_no_row_not_the_text_none(db: Database) -> None:
    """A None is SQL NULL, which equals nothing, as a bound NULL would be; not the text
    'None'. The escaping of the others holds beside it."""
    odd = ["None", 'a"b\\c']
    with db.transaction() as session:
        session.execute(insert(items), [{"id": ROWS + i, "name": name}
                                        for i, name in enumerate(odd)])
    with db.transaction() as session:
        found = session.scalars(select(items.c.id).where(
            one_of(session, items.c.name, [None, 'a"b\\c', "n1"])).order_by(items.c.id)).all()
    assert found == [1, ROWS + 1]
