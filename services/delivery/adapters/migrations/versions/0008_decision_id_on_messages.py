"""decision id on messages

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('messages', sa.Column('decision_id', sa.String(length=128), nullable=False,
                                        server_default=''))


def downgrade() -> None:
    op.drop_column('messages', 'decision_id')
