"""facts for funnels, experiments and attribution

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
    op.add_column('facts', sa.Column('journey_version', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    op.add_column('facts', sa.Column('node_id', sa.String(length=128), server_default='', nullable=False))
    op.add_column('facts', sa.Column('channel', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('facts', sa.Column('content_key', sa.String(length=128), server_default='', nullable=False))
    op.add_column('facts', sa.Column('variant', sa.String(length=128), server_default='', nullable=False))
    op.add_column('facts', sa.Column('experiment_id', sa.String(length=128), server_default='', nullable=False))
    op.add_column('facts', sa.Column('arm', sa.String(length=128), server_default='', nullable=False))
    op.add_column('facts', sa.Column('control', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('facts', sa.Column('arm_weight', sa.Float(), server_default=sa.text('0'), nullable=False))
    op.add_column('facts', sa.Column('revenue', sa.Float(), server_default=sa.text('0'), nullable=False))
    op.add_column('facts', sa.Column('currency', sa.String(length=3), server_default='', nullable=False))
    op.add_column('facts', sa.Column('exit_reason', sa.String(length=128), server_default='', nullable=False))
    op.add_column('facts', sa.Column('occur_hour', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    op.drop_index(op.f('ix_facts_journey'), table_name='facts')
    op.create_index('ix_facts_experiment', 'facts', ['workspace_id', 'experiment_id', 'profile_id'], unique=False)
    op.create_index('ix_facts_funnel', 'facts', ['workspace_id', 'journey_id', 'type', 'journey_version', 'enrollment_id'], unique=False)
    op.create_index('ix_facts_message', 'facts', ['workspace_id', 'message_id'], unique=False)
    op.create_index('ix_facts_profile', 'facts', ['workspace_id', 'profile_id', 'occur_time'], unique=False)
    # Facts recorded before this revision get their hour bucket (integer hours since epoch).
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("UPDATE facts SET occur_hour = floor(extract(epoch from occur_time) / 3600)")
    else:
        op.execute("UPDATE facts SET occur_hour = CAST(strftime('%s', occur_time) AS INTEGER) / 3600")
    op.create_index('ix_facts_type_time', 'facts', ['workspace_id', 'type', 'occur_time'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_facts_type_time', table_name='facts')
    op.drop_index('ix_facts_profile', table_name='facts')
    op.drop_index('ix_facts_message', table_name='facts')
    op.drop_index('ix_facts_funnel', table_name='facts')
    op.drop_index('ix_facts_experiment', table_name='facts')
    op.create_index(op.f('ix_facts_journey'), 'facts', ['workspace_id', 'journey_id', 'type'], unique=False)
    op.drop_column('facts', 'occur_hour')
    op.drop_column('facts', 'exit_reason')
    op.drop_column('facts', 'currency')
    op.drop_column('facts', 'revenue')
    op.drop_column('facts', 'arm_weight')
    op.drop_column('facts', 'control')
    op.drop_column('facts', 'arm')
    op.drop_column('facts', 'experiment_id')
    op.drop_column('facts', 'variant')
    op.drop_column('facts', 'content_key')
    op.drop_column('facts', 'channel')
    op.drop_column('facts', 'node_id')
    op.drop_column('facts', 'journey_version')
