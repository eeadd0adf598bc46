"""Writes a new Alembic revision for a service by diffing its tables against its migrations.

``python -m cjo_platform.db.revision cjo_<service> "what changed"`` (or ``make migration``).
One template for every service, so no service carries Alembic boilerplate of its own.
"""

from __future__ import annotations

import importlib
import re
import sys
import tempfile
from pathlib import Path

from alembic.autogenerate import produce_migrations, render_python_code
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from cjo_platform.db.engine import Database
from cjo_platform.db.migrations import alembic_config, upgrade

TEMPLATE = '''"""{message}

Revision ID: {revision}
Revises: {down_revision}
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cjo_platform.db.types

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def _body(code: str) -> str:
    lines = [line for line in code.splitlines() if "### " not in line and line.strip()]
    return "\n".join(lines) or "    pass"


def new_revision(package: str, message: str) -> Path | None:
    module = importlib.import_module(f"{package}.adapters.tables")
    metadata = module.metadata
    migrations = Path(importlib.import_module(f"{package}.adapters").__file__).parent / "migrations"  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/scratch.db")
        upgrade(db, migrations)
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            ops = produce_migrations(context, metadata)
        head = ScriptDirectory.from_config(alembic_config(db, migrations)).get_current_head()
        db.dispose()
    if ops.upgrade_ops is None or ops.upgrade_ops.is_empty():
        return None
    number = int(head or "0") + 1
    revision = f"{number:04d}"
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
    path = migrations / "versions" / f"{revision}_{slug}.py"
    path.write_text(TEMPLATE.format(
        message=message, revision=revision, down_revision=head,
        upgrade=_body(render_python_code(ops.upgrade_ops,
                                         user_module_prefix="cjo_platform.db.types.")),
        downgrade=_body(render_python_code(ops.downgrade_ops,  # type: ignore[arg-type]
                                           user_module_prefix="cjo_platform.db.types.")),
    ))
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m cjo_platform.db.revision cjo_<service> 'message'", file=sys.stderr)
        raise SystemExit(2)
    written = new_revision(sys.argv[1], sys.argv[2])
    print(written or "no changes", file=sys.stderr)
