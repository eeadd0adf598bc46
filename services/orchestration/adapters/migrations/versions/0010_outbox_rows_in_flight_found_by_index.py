"""outbox rows in flight found by index

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_lease', 'outbox', ['topic', 'lease_until'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_lease', table_name='outbox')
