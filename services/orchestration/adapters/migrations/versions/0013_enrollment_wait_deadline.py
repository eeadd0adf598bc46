"""enrollment wait deadline (best-time waits)

While a best-time wait asks decisioning for the person's send time, the latest moment it may
wait (arrival + max_delay): an outage of decisioning is retried with backoff, never past it.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('enrollments', sa.Column(
        'wait_deadline', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('enrollments', 'wait_deadline')
