"""schedule occurrences by journey and fire time

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cjo_platform.db.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_schedule_occurrences_journey', 'schedule_occurrences', ['workspace_id', 'journey_id', 'fire_time', 'journey_version'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_schedule_occurrences_journey', table_name='schedule_occurrences')
