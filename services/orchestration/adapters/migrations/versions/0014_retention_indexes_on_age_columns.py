"""retention: indexes on the age columns retention deletes by

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_request_log_created', 'request_log', ['create_time'])
    op.create_index('ix_dead_letters_failed', 'dead_letters', ['last_failed_time'])
    op.create_index('ix_inbox_processed_time', 'inbox', ['receive_time'],
                    postgresql_where=sa.text('processed'),
                    sqlite_where=sa.text('processed = 1'))
    op.create_index('ix_steps_time', 'steps', ['time'])


def downgrade() -> None:
    op.drop_index('ix_steps_time', table_name='steps')
    op.drop_index('ix_inbox_processed_time', table_name='inbox')
    op.drop_index('ix_dead_letters_failed', table_name='dead_letters')
    op.drop_index('ix_request_log_created', table_name='request_log')
