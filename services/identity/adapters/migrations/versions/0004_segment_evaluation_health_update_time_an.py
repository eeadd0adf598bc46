"""segment evaluation health, update time and etag

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
    op.add_column('segments', sa.Column('state', sa.String(length=16), server_default='active', nullable=False))
    op.add_column('segments', sa.Column('error_count', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('segments', sa.Column('consecutive_errors', sa.Integer(), server_default='0', nullable=False))
    op.add_column('segments', sa.Column('last_error', sa.String(length=1000), nullable=True))
    op.add_column('segments', sa.Column('last_error_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))
    op.add_column('segments', sa.Column('last_error_profile_id', sa.String(length=32), nullable=True))
    op.add_column('segments', sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))
    op.add_column('segments', sa.Column('etag', sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column('segments', 'etag')
    op.drop_column('segments', 'update_time')
    op.drop_column('segments', 'last_error_profile_id')
    op.drop_column('segments', 'last_error_time')
    op.drop_column('segments', 'last_error')
    op.drop_column('segments', 'consecutive_errors')
    op.drop_column('segments', 'error_count')
    op.drop_column('segments', 'state')
