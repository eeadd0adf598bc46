"""messages held behind an unfinished one of their profile on their channel: holds, ix_messages_held

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

HELD = "status = 'held'"


def upgrade() -> None:
    # A constant default: no rewrite of the table on PostgreSQL, a plain ADD COLUMN on SQLite
    # (the table is not recreated, so migration 0014's trigger stays).
    op.add_column('messages', sa.Column('holds', sa.Boolean(), nullable=False,
                                        server_default='0'))
    op.create_index('ix_messages_held', 'messages',
                    ['workspace_id', 'profile_id', 'channel', 'queue_order'],
                    postgresql_where=sa.text(HELD), sqlite_where=sa.text(HELD))


def downgrade() -> None:
    # Held messages become due: they lose their place behind the earlier ones, not their send.
    op.execute("UPDATE messages SET status = 'queued', next_attempt_time = update_time "
               "WHERE status = 'held'")
    op.drop_index('ix_messages_held', table_name='messages')
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('holds')
