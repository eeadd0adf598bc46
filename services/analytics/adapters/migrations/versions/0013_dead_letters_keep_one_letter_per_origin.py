"""dead letters keep one letter per origin (a bus row redelivered is not buried twice)

Revision ID: 0013
Revises: 0012
"""

from cjo_platform.db.migrations import add_dead_letter_origins, drop_dead_letter_origins

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_dead_letter_origins()


def downgrade() -> None:
    drop_dead_letter_origins()
