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
    op.create_table('messages',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=False),
    sa.Column('profile_id', sa.String(length=128), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('journey_id', sa.String(length=128), nullable=False),
    sa.Column('enrollment_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.String(length=1024), nullable=False),
    sa.Column('provider_message_id', sa.String(length=256), nullable=False),
    sa.Column('next_attempt_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('lease_until', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('traceparent', sa.String(length=64), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'message_id'),
    sa.UniqueConstraint('workspace_id', 'idempotency_key', name='uq_messages_idempotency_key')
    )
    op.create_index('ix_messages_due', 'messages', ['status', 'next_attempt_time'], unique=False)
    op.create_index('ix_messages_journey', 'messages', ['workspace_id', 'journey_id', 'create_time'], unique=False)
    op.create_index('ix_messages_lease', 'messages', ['status', 'lease_until'], unique=False)
    op.create_index('ix_messages_profile', 'messages', ['workspace_id', 'profile_id', 'create_time'], unique=False)
    op.create_index('ix_messages_recent', 'messages', ['workspace_id', 'create_time', 'message_id'], unique=False)
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
    op.drop_index('ix_messages_recent', table_name='messages')
    op.drop_index('ix_messages_profile', table_name='messages')
    op.drop_index('ix_messages_lease', table_name='messages')
    op.drop_index('ix_messages_journey', table_name='messages')
    op.drop_index('ix_messages_due', table_name='messages')
    op.drop_table('messages')
