"""message_providers: providers whose call for a message failed but that may have taken it

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Messages sent before it are still found by messages.provider_id.
    op.create_table(
        'message_providers',
        sa.Column('workspace_id', sa.String(length=64), nullable=False),
        sa.Column('message_id', sa.String(length=64), nullable=False),
        sa.Column('provider_id', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'message_id', 'provider_id'),
    )


def downgrade() -> None:
    op.drop_table('message_providers')
