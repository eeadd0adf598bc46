"""retired profiles and inbox by profile

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cjo_platform.db.types

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('retired_profiles',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('profile_id', sa.String(length=128), nullable=False),
    sa.Column('successor_profile_id', sa.String(length=128), nullable=False),
    sa.Column('retire_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'profile_id')
    )
    op.create_index('ix_inbox_profile', 'inbox', ['workspace_id', 'profile_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_inbox_profile', table_name='inbox')
    op.drop_table('retired_profiles')
