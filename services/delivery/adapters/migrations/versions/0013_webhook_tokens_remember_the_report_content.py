"""webhook tokens remember the report content

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "" for tokens spent before: a report carrying one again is refused as before (403).
    op.add_column('webhook_tokens', sa.Column('content_digest', sa.String(length=64),
                                              nullable=False, server_default=''))


def downgrade() -> None:
    op.drop_column('webhook_tokens', 'content_digest')
