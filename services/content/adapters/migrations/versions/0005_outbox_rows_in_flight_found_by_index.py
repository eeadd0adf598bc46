"""outbox rows in flight found by index

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_lease', 'outbox', ['topic', 'lease_until'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_lease', table_name='outbox')
