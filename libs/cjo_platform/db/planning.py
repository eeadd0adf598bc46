"""Statements planned at each run on PostgreSQL (see :data:`PLANNED_EACH_RUN`)."""

from __future__ import annotations

from typing import Any

# Execution option for a statement whose best plan depends on how big its tables are now
# (joins and look-ups over tables that grow: delivery's claim, updates by key, ...). psycopg
# prepares a statement a connection runs five times, and PostgreSQL then keeps a generic plan
# for it until something invalidates it (the table's next ANALYZE): made while a table was
# young (a new deployment, every estimate one row), such a plan found delivery's claimed rows
# through an index with the workspace alone as its condition, or updated a batch by key with
# a scan of the table per row, and stayed while the table grew to thousands of rows (a second
# per claim for minutes). A statement run with this option is sent unprepared on PostgreSQL
# (psycopg's unnamed statement): planned at each run for its values and the table as it is.
# Not for every statement: planning each run of a small one costs the server about as much
# CPU as running it (+50% of PostgreSQL's CPU per lone event in orchestration when every
# connection planned every run).
_OPTION = "cjo_planned_each_run"
PLANNED_EACH_RUN = {_OPTION: True}


def planned_each_run(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    """do_execute hook (PostgreSQL): a statement run with :data:`PLANNED_EACH_RUN` unprepared."""
    if context is not None and context.execution_options.get(_OPTION):
        cursor.execute(statement, parameters, prepare=False)
        return True
    return False
