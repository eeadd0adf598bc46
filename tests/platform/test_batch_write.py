"""A batch receiver stores what it can: an item the database refuses fails alone, with a status
naming it, and the others are written; a database that is down still fails the whole call."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy.exc import DataError, OperationalError

import cjo_platform.rpc
from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import fact_pb2
from cjo_platform.db.item_writes import write_each
from cjo_platform.rpc.batch import BatchAnswer
from cjo_platform.rpc.status import field_violations


class Refused(Exception):
    """What the driver raised."""


def answer(ids: list[str]) -> BatchAnswer[pb.RecordFactResult]:
    return BatchAnswer([fact_pb2.Fact(fact_id=i) for i in ids], "facts", "test.cjo",
                       pb.RecordFactResult)


async def test_only_the_item_the_database_refuses_fails() -> None:
    batch = answer(["a", "bad", "c"])
    calls: list[list[str]] = []

    async def write(items: list[str]) -> list[str]:
        calls.append(items)
        if "bad" in items:
            raise DataError("INSERT ...", {}, Refused("value too long for type varchar(64)"))
        return [item.upper() for item in items]

    written = await write_each(batch, [(0, "a"), (1, "bad"), (2, "c")], write)
    assert written == [(0, "A"), (2, "C")]
    assert calls[0] == ["a", "bad", "c"]  # one write when all is well; item by item after
    assert [r.status.code for r in batch.results] == [0, 3, 0]
    assert field_violations(batch.results[1].status) == {
        "facts[1]": "cannot be stored: value too long for type varchar(64)"}


async def test_a_database_that_is_down_fails_the_whole_call() -> None:
    batch = answer(["a", "b"])

    async def write(items: list[str]) -> list[str]:
        raise OperationalError("SELECT 1", {}, Refused("connection refused"))

    with pytest.raises(OperationalError):
        await write_each(batch, [(0, "a"), (1, "b")], write)


def test_the_rpc_layer_does_not_import_the_database_driver_layer() -> None:
    """rpc/ speaks gRPC; which database error is an item's fault is the db/ layer's call."""
    rpc = Path(cjo_platform.rpc.__file__).parent
    for module in sorted(rpc.glob("*.py")):
        tree = ast.parse(module.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert not any(name.split(".")[0] == "sqlalchemy" for name in imported), module.name
    batch = ast.parse((rpc / "batch.py").read_text())
    assert not any(isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
        "cjo_platform.db") for node in ast.walk(batch))
