"""enrollment entry properties (journey.entry in conditions)

The properties of the event that enrolled a profile, kept as they were: ``properties`` follows
the latest event (a wait-for-event that wakes overwrites it), while conditions read the entry's
as ``journey.entry``.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('enrollments', sa.Column('entry_properties', sa.JSON(), server_default='{}',
                                           nullable=False))
    # Best available for enrollments made before: the properties they hold now (for one whose
    # wait-for-event already woke, the waking event's rather than the entry's).
    op.execute("UPDATE enrollments SET entry_properties = properties")


def downgrade() -> None:
    op.drop_column('enrollments', 'entry_properties')
