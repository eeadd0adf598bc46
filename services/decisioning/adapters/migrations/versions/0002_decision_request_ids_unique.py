"""decision request ids unique per point

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_decisions_request', table_name='decisions')
    op.create_index('ux_decisions_request', 'decisions',
                    ['workspace_id', 'decision_point', 'request_id'], unique=True,
                    postgresql_where=sa.text("request_id <> ''"),
                    sqlite_where=sa.text("request_id <> ''"))


def downgrade() -> None:
    op.drop_index('ux_decisions_request', table_name='decisions',
                  postgresql_where=sa.text("request_id <> ''"),
                  sqlite_where=sa.text("request_id <> ''"))
    op.create_index('ix_decisions_request', 'decisions',
                    ['workspace_id', 'decision_point', 'request_id'], unique=False)
