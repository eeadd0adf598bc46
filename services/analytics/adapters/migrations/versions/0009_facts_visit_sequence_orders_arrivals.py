"""facts.visit_sequence orders an enrollment's arrivals at nodes

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Old visit facts keep 0: "not numbered" (they were recorded when leaving the node).
    op.add_column('facts', sa.Column('visit_sequence', sa.BigInteger(), nullable=False,
                                     server_default=sa.text('0')))


def downgrade() -> None:
    op.drop_column('facts', 'visit_sequence')
