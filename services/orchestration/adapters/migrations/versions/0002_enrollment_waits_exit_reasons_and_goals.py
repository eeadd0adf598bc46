"""enrollment waits, exit reasons and goals

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cjo_platform.db.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('enrollments', sa.Column('waiting', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('enrollments', sa.Column('exit_reason', sa.String(length=200), server_default='', nullable=False))
    op.add_column('enrollments', sa.Column('goal_deadline', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))
    op.add_column('enrollments', sa.Column('goal_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))
    op.create_index('ix_enrollments_watch', 'enrollments', ['workspace_id', 'profile_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_enrollments_watch', table_name='enrollments')
    op.drop_column('enrollments', 'goal_time')
    op.drop_column('enrollments', 'goal_deadline')
    op.drop_column('enrollments', 'exit_reason')
    op.drop_column('enrollments', 'waiting')
