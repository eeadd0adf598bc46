"""status webhook urls rotated per provider

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "" for existing providers: their status URLs (signed without a nonce) keep working until
    # rotated.
    op.add_column('providers', sa.Column('webhook_nonce', sa.String(length=32), nullable=False,
                                         server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('providers') as batch:
        batch.drop_column('webhook_nonce')
