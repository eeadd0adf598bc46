"""facts.source_event_id: one conversion per (person, source event)

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Old conversion facts keep '': each counts on its own, as before.
    op.add_column('facts', sa.Column('source_event_id', sa.String(length=128), nullable=False,
                                     server_default=''))


def downgrade() -> None:
    op.drop_column('facts', 'source_event_id')
