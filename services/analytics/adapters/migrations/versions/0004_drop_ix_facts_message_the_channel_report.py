"""drop ix_facts_message: the channel report reads messages

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cjo_platform.db.types

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index(op.f('ix_facts_message'), table_name='facts')


def downgrade() -> None:
    op.create_index(op.f('ix_facts_message'), 'facts', ['workspace_id', 'message_id'], unique=False)
