"""profile enrollment and message ids as wide as every service accepts

Delivery and orchestration accept profile ids (and delivery enrollment ids) of up to 128
characters (cjo_platform.limits); facts stored them in varchar(64), so on PostgreSQL one long id
failed the facts forwarder's batch for good.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In batch mode: PostgreSQL widens in place; SQLite (which never enforced the width) copies
    # the table, so its declared schema matches the code's too.
    with op.batch_alter_table('facts') as batch:
        for column in ('profile_id', 'enrollment_id', 'message_id'):
            batch.alter_column(column, existing_type=sa.String(length=64),
                               type_=sa.String(length=128), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('facts') as batch:
        for column in ('profile_id', 'enrollment_id', 'message_id'):
            batch.alter_column(column, existing_type=sa.String(length=128),
                               type_=sa.String(length=64), existing_nullable=False)
