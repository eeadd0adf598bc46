"""inbox events back off after a failed attempt (not_before)

An inbox event whose round failed is not claimed again before ``not_before`` (the delay doubles
with each attempt), so its attempts are not used up in seconds by rounds every HandleEvents
wakes.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('inbox', sa.Column('not_before',
                                     cjo_platform.db.types.UtcDateTime(timezone=True),
                                     nullable=True))


def downgrade() -> None:
    op.drop_column('inbox', 'not_before')
