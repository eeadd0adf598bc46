"""profile aliases (identity merges, so reports count people) and exposure deadlines

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('facts', sa.Column('conversion_deadline',
                                     cjo_platform.db.types.UtcDateTime(timezone=True),
                                     nullable=True))
    op.create_table(
        'profile_aliases',
        sa.Column('workspace_id', sa.String(length=64), nullable=False),
        sa.Column('merged_profile_id', sa.String(length=128), nullable=False),
        sa.Column('survivor_profile_id', sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'merged_profile_id'),
    )
    op.create_index('ix_profile_aliases_survivor', 'profile_aliases',
                    ['workspace_id', 'survivor_profile_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_profile_aliases_survivor', table_name='profile_aliases')
    op.drop_table('profile_aliases')
    op.drop_column('facts', 'conversion_deadline')
