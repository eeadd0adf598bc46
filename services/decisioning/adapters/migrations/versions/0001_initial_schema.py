"""initial schema

Revision ID: 0001
Revises: None
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cjo_platform.db.types

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('actions',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('etag', sa.String(length=64), nullable=False),
    sa.Column('exposures', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'key')
    )
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
    op.create_table('decision_points',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('etag', sa.String(length=64), nullable=False),
    sa.Column('error_count', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_error', sa.Text(), server_default='', nullable=False),
    sa.Column('last_error_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'key')
    )
    op.create_table('decisions',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('decision_id', sa.String(length=128), nullable=False),
    sa.Column('decision_point', sa.String(length=128), nullable=False),
    sa.Column('profile_id', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), server_default='', nullable=False),
    sa.Column('pick_probability', sa.Float(), server_default=sa.text('0'), nullable=False),
    sa.Column('control', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('request_id', sa.String(length=128), server_default='', nullable=False),
    sa.Column('decide_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('decide_hour', sa.BigInteger(), nullable=False),
    sa.Column('candidates', sa.JSON(), nullable=False),
    sa.Column('ineligible', sa.JSON(), nullable=False),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('context', sa.JSON(), nullable=False),
    sa.Column('outcome', sa.SmallInteger(), nullable=False),
    sa.Column('expose_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('reward_deadline', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('reward_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('reward_event_id', sa.String(length=128), server_default='', nullable=False),
    sa.Column('learned', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), server_default='', nullable=False),
    sa.Column('lease_until', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('workspace_id', 'decision_id')
    )
    op.create_index('ix_decisions_contacts', 'decisions', ['workspace_id', 'profile_id', 'action', 'expose_time'], unique=False)
    op.create_index('ix_decisions_learning', 'decisions', ['learned', 'outcome', 'reward_deadline'], unique=False)
    op.create_index('ix_decisions_point_time', 'decisions', ['workspace_id', 'decision_point', 'decide_time'], unique=False)
    op.create_index('ix_decisions_profile_outcome', 'decisions', ['workspace_id', 'profile_id', 'outcome'], unique=False)
    op.create_index('ix_decisions_request', 'decisions', ['workspace_id', 'decision_point', 'request_id'], unique=False)
    op.create_table('engagement_hours',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('profile_id', sa.String(length=128), nullable=False),
    sa.Column('channel', sa.Integer(), nullable=False),
    sa.Column('hour', sa.SmallInteger(), nullable=False),
    sa.Column('engagements', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'profile_id', 'channel', 'hour')
    )
    op.create_table('models',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('decision_point', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('mean', sa.LargeBinary(), nullable=False),
    sa.Column('precision', sa.LargeBinary(), nullable=False),
    sa.Column('observations', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('rewards', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('version', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'decision_point', 'action')
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('traceparent', sa.String(length=64), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('first_failed_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_outbox_lease', 'outbox', ['topic', 'lease_until'], unique=False)
    op.create_index('ix_outbox_topic', 'outbox', ['topic', 'id'], unique=False)
    op.create_table('profile_aliases',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('profile_id', sa.String(length=128), nullable=False),
    sa.Column('survivor_profile_id', sa.String(length=128), nullable=False),
    sa.Column('merge_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'profile_id')
    )
    op.create_index('ix_profile_aliases_survivor', 'profile_aliases', ['workspace_id', 'survivor_profile_id'], unique=False)
    op.create_table('received',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('source_id', sa.String(length=144), nullable=False),
    sa.Column('receive_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'source_id')
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
    op.drop_table('received')
    op.drop_index('ix_profile_aliases_survivor', table_name='profile_aliases')
    op.drop_table('profile_aliases')
    op.drop_index('ix_outbox_topic', table_name='outbox')
    op.drop_index('ix_outbox_lease', table_name='outbox')
    op.drop_table('outbox')
    op.drop_table('models')
    op.drop_table('engagement_hours')
    op.drop_index('ix_decisions_request', table_name='decisions')
    op.drop_index('ix_decisions_profile_outcome', table_name='decisions')
    op.drop_index('ix_decisions_point_time', table_name='decisions')
    op.drop_index('ix_decisions_learning', table_name='decisions')
    op.drop_index('ix_decisions_contacts', table_name='decisions')
    op.drop_table('decisions')
    op.drop_table('decision_points')
    op.drop_index('ix_dead_letters_workspace', table_name='dead_letters')
    op.drop_table('dead_letters')
    op.drop_table('actions')
