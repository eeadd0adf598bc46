"""bus_watermarks: each bus partition's latest watermark marker of identity's reward events

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from cjo_platform.db import UtcDateTime

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'bus_watermarks',
        sa.Column('stream', sa.String(32), nullable=False),
        sa.Column('bus_partition', sa.Integer(), nullable=False),
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('delivered_before', UtcDateTime(timezone=True), nullable=False),
        sa.Column('update_time', UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('stream', 'bus_partition', 'workspace_id'),
    )


def downgrade() -> None:
    op.drop_table('bus_watermarks')
