"""retention: indexes on the age columns retention deletes by

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from cjo_platform.db.types import UtcDateTime

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_request_log_created', 'request_log', ['create_time'])
    op.create_index('ix_dead_letters_failed', 'dead_letters', ['last_failed_time'])
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('body_removed_time', UtcDateTime(), nullable=True))
    op.create_index('ix_messages_bodies', 'messages', ['create_time'],
                    postgresql_where=sa.text('body_removed_time IS NULL'),
                    sqlite_where=sa.text('body_removed_time IS NULL'))
    op.create_index('ix_inbox_messages_created', 'inbox_messages', ['create_time'])


def downgrade() -> None:
    op.drop_index('ix_inbox_messages_created', table_name='inbox_messages')
    op.drop_index('ix_messages_bodies', table_name='messages')
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('body_removed_time')
    op.drop_index('ix_dead_letters_failed', table_name='dead_letters')
    op.drop_index('ix_request_log_created', table_name='request_log')
