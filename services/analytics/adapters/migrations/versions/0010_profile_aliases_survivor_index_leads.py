"""profile aliases: the survivor index leads with the survivor

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (workspace_id, survivor) looked as good as the primary key (workspace_id, merged) to a
    # planner without statistics, which then scanned every alias of the workspace per fact.
    op.drop_index('ix_profile_aliases_survivor', table_name='profile_aliases')
    op.create_index('ix_profile_aliases_survivor', 'profile_aliases',
                    ['survivor_profile_id', 'workspace_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_profile_aliases_survivor', table_name='profile_aliases')
    op.create_index('ix_profile_aliases_survivor', 'profile_aliases',
                    ['workspace_id', 'survivor_profile_id'], unique=False)
