"""forwarding_watermarks: how far identity's reward events have been delivered

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from cjo_platform.db import UtcDateTime

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'forwarding_watermarks',
        sa.Column('stream', sa.String(32), nullable=False),
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('delivered_before', UtcDateTime(timezone=True), nullable=False),
        sa.Column('update_time', UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('stream', 'workspace_id'),
    )


def downgrade() -> None:
    op.drop_table('forwarding_watermarks')
