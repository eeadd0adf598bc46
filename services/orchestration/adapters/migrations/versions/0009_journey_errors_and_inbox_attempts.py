"""journey error counts; inbox attempts, last error and the per-profile pending index

Journeys count the errors their definitions run into (error_count, last_error,
last_error_time). Inbox events count the rounds that failed to apply them (attempts, last_error)
before they are given up to the dead letters; a partial index on the pending tail by profile lets
a claim check that no older event of its profiles is held by another replica.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('journeys', sa.Column('error_count', sa.BigInteger(),
                                        server_default=sa.text('0'), nullable=False))
    op.add_column('journeys', sa.Column('last_error', sa.Text(), server_default='',
                                        nullable=False))
    op.add_column('journeys', sa.Column('last_error_time',
                                        cjo_platform.db.types.UtcDateTime(timezone=True),
                                        nullable=True))
    op.add_column('inbox', sa.Column('attempts', sa.Integer(), server_default=sa.text('0'),
                                     nullable=False))
    op.add_column('inbox', sa.Column('last_error', sa.Text(), server_default='', nullable=False))
    op.create_index('ix_inbox_pending_profile', 'inbox', ['workspace_id', 'profile_id', 'seq'],
                    unique=False, postgresql_where=sa.text('NOT processed'),
                    sqlite_where=sa.text('processed = 0'))


def downgrade() -> None:
    op.drop_index('ix_inbox_pending_profile', table_name='inbox',
                  postgresql_where=sa.text('NOT processed'), sqlite_where=sa.text('processed = 0'))
    op.drop_column('inbox', 'last_error')
    op.drop_column('inbox', 'attempts')
    op.drop_column('journeys', 'last_error_time')
    op.drop_column('journeys', 'last_error')
    op.drop_column('journeys', 'error_count')
