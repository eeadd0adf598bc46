"""retention: indexes on the age columns retention deletes by

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_request_log_created', 'request_log', ['create_time'])
    op.create_index('ix_dead_letters_failed', 'dead_letters', ['last_failed_time'])


def downgrade() -> None:
    op.drop_index('ix_dead_letters_failed', table_name='dead_letters')
    op.drop_index('ix_request_log_created', table_name='request_log')
