"""events: retention's index holds only the events no golden record is folded from
(ix_events_removable, partial; replaces ix_events_received)

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

# adapters/tables.events_removable as of this revision: no traits, and not a consent event.
REMOVABLE = ("CAST(traits AS TEXT) = '{}' AND (type != 'track' OR name != 'subscribed' "
             "AND name != 'unsubscribed')")


def upgrade() -> None:
    # IF NOT EXISTS: an operator may have built it beforehand with CREATE INDEX CONCURRENTLY
    # (the build reads the whole table, and here it holds off writes meanwhile).
    op.create_index('ix_events_removable', 'events', ['receive_time'], if_not_exists=True,
                    postgresql_where=sa.text(REMOVABLE), sqlite_where=sa.text(REMOVABLE))
    op.drop_index('ix_events_received', table_name='events')


def downgrade() -> None:
    op.create_index('ix_events_received', 'events', ['receive_time'])
    op.drop_index('ix_events_removable', table_name='events')
