"""providers, policies, suppressions, inbox, message policy columns

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cjo_platform.db.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbox_messages',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('profile_id', sa.String(length=128), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('journey_id', sa.String(length=128), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'message_id')
    )
    op.create_index('ix_inbox_profile', 'inbox_messages', ['workspace_id', 'profile_id', 'create_time', 'message_id'], unique=False)
    op.create_table('policies',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('policy', sa.Text(), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id')
    )
    op.create_table('providers',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('provider_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('config', sa.Text(), nullable=False),
    sa.Column('secrets', sa.Text(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('etag', sa.String(length=64), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'provider_id')
    )
    op.create_index('ix_providers_channel', 'providers', ['workspace_id', 'channel', 'priority'], unique=False)
    op.create_table('suppressions',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('reason', sa.String(length=1024), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'channel', 'address')
    )
    op.add_column('messages', sa.Column('topic', sa.String(length=64), server_default='', nullable=False))
    op.add_column('messages', sa.Column('transactional', sa.Boolean(), server_default='0', nullable=False))
    op.add_column('messages', sa.Column('time_zone', sa.String(length=64), server_default='', nullable=False))
    op.add_column('messages', sa.Column('sent_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))
    op.add_column('messages', sa.Column('provider_id', sa.String(length=64), server_default='', nullable=False))
    op.create_index('ix_messages_sends', 'messages', ['workspace_id', 'profile_id', 'channel', 'sent_time'], unique=False)
    op.create_index('ix_messages_status', 'messages', ['workspace_id', 'status', 'create_time'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_messages_status', table_name='messages')
    op.drop_index('ix_messages_sends', table_name='messages')
    op.drop_column('messages', 'provider_id')
    op.drop_column('messages', 'sent_time')
    op.drop_column('messages', 'time_zone')
    op.drop_column('messages', 'transactional')
    op.drop_column('messages', 'topic')
    op.drop_table('suppressions')
    op.drop_index('ix_providers_channel', table_name='providers')
    op.drop_table('providers')
    op.drop_table('policies')
    op.drop_index('ix_inbox_profile', table_name='inbox_messages')
    op.drop_table('inbox_messages')
