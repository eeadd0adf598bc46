"""messages claimed in queue order: queue_order, lease_holder, ix_messages_queue, ix_messages_pending

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

PENDING = "status IN ('queued', 'deferred', 'sending')"


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == 'postgresql'
    # Nullable and without a default when added: no rewrite of the table. Only messages not
    # final yet get a place in the queue (in the order they were queued); final ones are
    # never claimed again.
    op.add_column('messages', sa.Column('queue_order', sa.BigInteger(), nullable=True))
    op.add_column('messages', sa.Column('lease_holder', sa.String(length=32), nullable=False,
                                        server_default=''))
    # In the order they were queued; never more than the number of rows, so below every rowid
    # SQLite numbers new messages with.
    op.execute(f"""
        UPDATE messages SET queue_order = queued.n
        FROM (SELECT workspace_id, message_id,
                     row_number() OVER (ORDER BY create_time, message_id) AS n
              FROM messages WHERE {PENDING}) AS queued
        WHERE messages.workspace_id = queued.workspace_id
          AND messages.message_id = queued.message_id""")
    if postgresql:
        op.execute("CREATE SEQUENCE messages_queue_order_seq OWNED BY messages.queue_order")
        op.execute("SELECT setval('messages_queue_order_seq', "
                   "coalesce((SELECT max(queue_order) FROM messages), 0) + 1, false)")
        op.execute("ALTER TABLE messages ALTER COLUMN queue_order "
                   "SET DEFAULT nextval('messages_queue_order_seq')")
    else:
        # The rowid: one more than the largest, for each new row.
        op.execute("""
            CREATE TRIGGER messages_queue_order AFTER INSERT ON messages
            FOR EACH ROW WHEN NEW.queue_order IS NULL
            BEGIN UPDATE messages SET queue_order = NEW.rowid WHERE rowid = NEW.rowid; END""")
    op.create_index('ix_messages_queue', 'messages', ['queue_order'],
                    postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))
    op.create_index('ix_messages_pending', 'messages',
                    ['workspace_id', 'profile_id', 'queue_order'],
                    postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))


def downgrade() -> None:
    op.drop_index('ix_messages_pending', table_name='messages')
    op.drop_index('ix_messages_queue', table_name='messages')
    if op.get_bind().dialect.name != 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS messages_queue_order")
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('lease_holder')
        batch.drop_column('queue_order')  # its sequence goes with it (OWNED BY)
