"""frequency caps reserved and circuit breakers shared by sender replicas

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Messages SENDING during the upgrade hold no reservation: the release before counted
    # only sent ones, and so does this one until their round records them.
    op.add_column('messages', sa.Column(
        'cap_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))
    op.create_table('cap_locks',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('profile_id', sa.String(length=128), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'profile_id', 'channel')
    )
    # Breakers start closed on every replica, as they did in each process before.
    op.create_table('provider_breakers',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('provider_id', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('open_until', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('trial_until', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('workspace_id', 'provider_id')
    )


def downgrade() -> None:
    op.drop_table('provider_breakers')
    op.drop_table('cap_locks')
    op.drop_column('messages', 'cap_time')
