"""events.original_timestamp: the sender's time when identity replaced it

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from cjo_platform.db import UtcDateTime

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('events', sa.Column('original_timestamp', UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.drop_column('original_timestamp')
