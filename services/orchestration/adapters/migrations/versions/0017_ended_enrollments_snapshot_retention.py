"""retention: ended enrollments' copies of the person (traits, properties) emptied after their
steps' days

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

from cjo_platform.db.types import UtcDateTime

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

STORED = "state <> 'active' AND snapshot_removed_time IS NULL"


def upgrade() -> None:
    # Both IF NOT EXISTS on PostgreSQL: on a large table an operator adds the column and builds
    # the index beforehand without blocking enrollments (CREATE INDEX CONCURRENTLY, CHANGELOG
    # Upgrading); this migration then keeps them instead of locking the table while it builds.
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE enrollments ADD COLUMN IF NOT EXISTS snapshot_removed_time '
                   'TIMESTAMP WITH TIME ZONE')
    else:
        with op.batch_alter_table('enrollments') as batch:
            batch.add_column(sa.Column('snapshot_removed_time', UtcDateTime(), nullable=True))
    op.create_index('ix_enrollments_snapshots', 'enrollments', ['update_time'],
                    if_not_exists=True, postgresql_where=sa.text(STORED),
                    sqlite_where=sa.text(STORED))


def downgrade() -> None:
    op.drop_index('ix_enrollments_snapshots', table_name='enrollments')
    with op.batch_alter_table('enrollments') as batch:
        batch.drop_column('snapshot_removed_time')
