"""lease expiries on messages: a message whose outcome is never recorded is not sent forever

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: no rewrite of the table on PostgreSQL (11+).
    op.add_column('messages', sa.Column('lease_expiries', sa.Integer(), nullable=False,
                                        server_default='0'))


def downgrade() -> None:
    # Not batch_alter_table on SQLite: recreating the table would lose its queue_order
    # trigger (migration 0014). SQLite drops a column itself since 3.35.
    op.execute('ALTER TABLE messages DROP COLUMN lease_expiries')
