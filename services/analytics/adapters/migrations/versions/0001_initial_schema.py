"""initial schema

Revision ID: 0001
Revises: None
"""

import cjo_platform.db.types
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('facts',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('fact_id', sa.String(length=128), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('profile_id', sa.String(length=64), nullable=False),
    sa.Column('journey_id', sa.String(length=128), nullable=False),
    sa.Column('enrollment_id', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('occur_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('record_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'fact_id')
    )
    op.create_index('ix_facts_journey', 'facts', ['workspace_id', 'journey_id', 'type'], unique=False)
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
    op.drop_index('ix_facts_journey', table_name='facts')
    op.drop_table('facts')
