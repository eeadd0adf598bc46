"""schedule occurrences

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cjo_platform.db.types

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('schedule_occurrences',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('journey_id', sa.String(length=64), nullable=False),
    sa.Column('journey_version', sa.BigInteger(), nullable=False),
    sa.Column('fire_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('page_token', sa.Text(), nullable=False),
    sa.Column('pages', sa.Integer(), nullable=False),
    sa.Column('enrolled', sa.Integer(), nullable=False),
    sa.Column('not_enrolled', sa.Integer(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('lease_until', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('lease_token', sa.String(length=32), nullable=True),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('start_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('finish_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('workspace_id', 'journey_id', 'journey_version', 'fire_time')
    )
    op.create_index('ix_schedule_occurrences_due', 'schedule_occurrences', ['fire_time'], unique=False, postgresql_where=sa.text("state IN ('pending', 'running')"), sqlite_where=sa.text("state IN ('pending', 'running')"))


def downgrade() -> None:
    op.drop_index('ix_schedule_occurrences_due', table_name='schedule_occurrences', postgresql_where=sa.text("state IN ('pending', 'running')"), sqlite_where=sa.text("state IN ('pending', 'running')"))
    op.drop_table('schedule_occurrences')
