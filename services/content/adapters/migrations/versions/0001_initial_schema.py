"""initial schema

Revision ID: 0001
Revises: None
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('content_items',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('email', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('revision', sa.BigInteger(), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'key')
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('traceparent', sa.String(length=64), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('request_log',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=128), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('response', sa.LargeBinary(), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'method', 'request_id')
    )


def downgrade() -> None:
    op.drop_table('request_log')
    op.drop_table('outbox')
    op.drop_table('content_items')
