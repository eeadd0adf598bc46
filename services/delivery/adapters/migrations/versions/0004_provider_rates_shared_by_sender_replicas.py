"""provider rates shared by sender replicas

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows appear on a provider's first rate-limited send; none to backfill.
    op.create_table('provider_rates',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('provider_id', sa.String(length=64), nullable=False),
    sa.Column('tat', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('promised', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('workspace_id', 'provider_id')
    )


def downgrade() -> None:
    op.drop_table('provider_rates')
