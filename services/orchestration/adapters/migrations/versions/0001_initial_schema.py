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
    op.create_table('enrollments',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('enrollment_id', sa.String(length=64), nullable=False),
    sa.Column('journey_id', sa.String(length=64), nullable=False),
    sa.Column('journey_version', sa.BigInteger(), nullable=False),
    sa.Column('profile_id', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('current_node_id', sa.String(length=64), nullable=False),
    sa.Column('visits', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('step_count', sa.Integer(), nullable=False),
    sa.Column('due_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('lease_until', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('lease_token', sa.String(length=32), nullable=True),
    sa.Column('traits', sa.JSON(), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('traceparent', sa.String(length=64), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'enrollment_id')
    )
    op.create_index('ix_enrollments_due', 'enrollments', ['due_time'], unique=False, postgresql_where=sa.text("state = 'active'"), sqlite_where=sa.text("state = 'active'"))
    op.create_index('ix_enrollments_journey', 'enrollments', ['workspace_id', 'journey_id', 'create_time'], unique=False)
    op.create_index('ix_enrollments_profile', 'enrollments', ['workspace_id', 'journey_id', 'profile_id'], unique=False)
    op.create_index('uq_enrollments_active', 'enrollments', ['workspace_id', 'journey_id', 'profile_id'], unique=True, postgresql_where=sa.text("state = 'active'"), sqlite_where=sa.text("state = 'active'"))
    op.create_table('inbox',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('profile_id', sa.String(length=128), nullable=False),
    sa.Column('event_name', sa.String(length=200), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.Column('traits', sa.JSON(), nullable=False),
    sa.Column('traceparent', sa.String(length=64), nullable=False),
    sa.Column('receive_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('processed', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('workspace_id', 'event_id', name='uq_inbox_event')
    )
    op.create_index('ix_inbox_pending', 'inbox', ['seq'], unique=False, postgresql_where=sa.text('NOT processed'), sqlite_where=sa.text('processed = 0'))
    op.create_table('journey_versions',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('journey_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('trigger_event_name', sa.String(length=200), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'journey_id', 'version')
    )
    op.create_index('ix_journey_versions_trigger', 'journey_versions', ['workspace_id', 'trigger_event_name'], unique=False)
    op.create_table('journeys',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('journey_id', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('published_version', sa.BigInteger(), nullable=False),
    sa.Column('revision', sa.BigInteger(), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'journey_id')
    )
    op.create_index('ix_journeys_created', 'journeys', ['workspace_id', 'create_time', 'journey_id'], unique=False)
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
    op.create_table('steps',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('enrollment_id', sa.String(length=64), nullable=False),
    sa.Column('step_number', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('visit', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'enrollment_id', 'step_number')
    )


def downgrade() -> None:
    op.drop_table('steps')
    op.drop_table('request_log')
    op.drop_table('outbox')
    op.drop_index('ix_journeys_created', table_name='journeys')
    op.drop_table('journeys')
    op.drop_index('ix_journey_versions_trigger', table_name='journey_versions')
    op.drop_table('journey_versions')
    op.drop_index('ix_inbox_pending', table_name='inbox', postgresql_where=sa.text('NOT processed'), sqlite_where=sa.text('processed = 0'))
    op.drop_table('inbox')
    op.drop_index('uq_enrollments_active', table_name='enrollments', postgresql_where=sa.text("state = 'active'"), sqlite_where=sa.text("state = 'active'"))
    op.drop_index('ix_enrollments_profile', table_name='enrollments')
    op.drop_index('ix_enrollments_journey', table_name='enrollments')
    op.drop_index('ix_enrollments_due', table_name='enrollments', postgresql_where=sa.text("state = 'active'"), sqlite_where=sa.text("state = 'active'"))
    op.drop_table('enrollments')
