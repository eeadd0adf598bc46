"""segment_revisions: a workspace's segments' revision, moved by every write of its segments;
a process keeps the active segments it read and reads them again only when it moved.

Revision ID: 0011
Revises: 0010
"""

from alembic import op
from sqlalchemy import BigInteger, Column, PrimaryKeyConstraint, String

revision = '0011'
down_revision = '0010'
branch_labels = depends_on = None


def upgrade() -> None:
    # No row: revision 0 (no segment was written since).
    op.create_table(
        'segment_revisions',
        Column('workspace_id', String(length=64), nullable=False),
        Column('revision', BigInteger(), nullable=False),
        PrimaryKeyConstraint('workspace_id'),
    )


def downgrade() -> None:
    op.drop_table('segment_revisions')
