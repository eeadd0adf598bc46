"""webhook tokens spent once by any replica

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
    op.create_table(
        'webhook_tokens',
        sa.Column('workspace_id', sa.String(length=64), nullable=False),
        sa.Column('provider_id', sa.String(length=64), nullable=False),
        sa.Column('token', sa.String(length=256), nullable=False),
        sa.Column('expire_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'provider_id', 'token'),
    )
    op.create_index('ix_webhook_tokens_expiry', 'webhook_tokens',
                    ['workspace_id', 'provider_id', 'expire_time'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_tokens_expiry', table_name='webhook_tokens')
    op.drop_table('webhook_tokens')
