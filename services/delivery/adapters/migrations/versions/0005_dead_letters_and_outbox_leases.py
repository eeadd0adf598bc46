"""dead letters and outbox leases

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('item_key', sa.String(length=256), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('traceparent', sa.String(length=64), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('first_failed_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('last_failed_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_dead_letters_workspace', 'dead_letters', ['workspace_id', 'id'], unique=False)
    op.add_column('outbox', sa.Column('lease_owner', sa.String(length=64), nullable=True))
    op.add_column('outbox', sa.Column('lease_until', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))
    op.add_column('outbox', sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
    op.add_column('outbox', sa.Column('first_failed_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))
    op.create_index('ix_outbox_topic', 'outbox', ['topic', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_topic', table_name='outbox')
    op.drop_column('outbox', 'first_failed_time')
    op.drop_column('outbox', 'attempts')
    op.drop_column('outbox', 'lease_until')
    op.drop_column('outbox', 'lease_owner')
    op.drop_index('ix_dead_letters_workspace', table_name='dead_letters')
    op.drop_table('dead_letters')
