"""dead letters: an index on their item (a letter found without walking its workspace's)

Revision ID: 0010
Revises: 0009
"""

from cjo_platform.db.migrations import add_dead_letter_item_index, drop_dead_letter_item_index

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_dead_letter_item_index()


def downgrade() -> None:
    drop_dead_letter_item_index()
