"""entry id, occurrence attempts and retention index

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cjo_platform.db.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('enrollments', sa.Column('entry_id', sa.String(length=128), server_default='', nullable=False))
    # Best available for enrollments made before: the event id they hold now (for one whose
    # wait-for-event already woke, that is the waking event rather than the entry).
    op.execute("UPDATE enrollments SET entry_id = event_id")
    op.add_column('schedule_occurrences', sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.create_index('ix_schedule_occurrences_finished', 'schedule_occurrences', ['finish_time'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_schedule_occurrences_finished', table_name='schedule_occurrences')
    op.drop_column('schedule_occurrences', 'attempts')
    op.drop_column('enrollments', 'entry_id')
