"""received: an index by receive time, for the learning worker's pruning

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_received_time', 'received', ['receive_time'])


def downgrade() -> None:
    op.drop_index('ix_received_time', table_name='received')
