"""decisions: one index keyed by person (ix_decisions_person) instead of two

Each index keyed by person takes a random key per logged decision (a page written per decision
on a large log); ix_decisions_person serves what ix_decisions_profile_outcome (rewards) and
ix_decisions_contacts (contact limits) served.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_decisions_person', 'decisions',
                    ['workspace_id', 'profile_id', 'outcome', 'action', 'expose_time'],
                    unique=False)
    op.drop_index('ix_decisions_contacts', table_name='decisions')
    op.drop_index('ix_decisions_profile_outcome', table_name='decisions')


def downgrade() -> None:
    op.create_index('ix_decisions_profile_outcome', 'decisions',
                    ['workspace_id', 'profile_id', 'outcome'], unique=False)
    op.create_index('ix_decisions_contacts', 'decisions',
                    ['workspace_id', 'profile_id', 'action', 'expose_time'], unique=False)
    op.drop_index('ix_decisions_person', table_name='decisions')
