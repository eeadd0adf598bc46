"""early_rewards: reward events that arrived before their decision's exposure

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from cjo_platform.db import UtcDateTime

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'early_rewards',
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('decision_id', sa.String(128), nullable=False),
        sa.Column('event_id', sa.String(128), nullable=False),
        sa.Column('decision_point', sa.String(128), nullable=False),
        sa.Column('profile_id', sa.String(128), nullable=False),
        sa.Column('event_time', UtcDateTime(timezone=True), nullable=False),
        sa.Column('expire_time', UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'decision_id', 'event_id'),
    )
    op.create_index('ix_early_rewards_event', 'early_rewards', ['workspace_id', 'event_id'])
    op.create_index('ix_early_rewards_expire', 'early_rewards', ['expire_time'])


def downgrade() -> None:
    op.drop_table('early_rewards')
