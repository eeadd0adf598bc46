"""identity graph, merges, consent, settings, segments, erasure

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
    op.create_table('edges',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('edge_key', sa.String(length=40), nullable=False),
    sa.Column('cluster_id', sa.String(length=32), nullable=False),
    sa.Column('identifiers', sa.JSON(), nullable=False),
    sa.Column('first_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('first_message_id', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'edge_key')
    )
    op.create_index('ix_edges_cluster', 'edges', ['workspace_id', 'cluster_id'], unique=False)
    op.create_table('erased_identifiers',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('value', sa.String(length=256), nullable=False),
    sa.Column('erase_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'type', 'value')
    )
    op.create_table('identity_settings',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('update_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id')
    )
    op.create_table('profile_merges',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('merged_profile_id', sa.String(length=32), nullable=False),
    sa.Column('survivor_profile_id', sa.String(length=32), nullable=False),
    sa.Column('identifier_type', sa.String(length=16), nullable=False),
    sa.Column('identifier_value', sa.String(length=256), nullable=False),
    sa.Column('message_id', sa.String(length=128), nullable=False),
    sa.Column('merge_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'merged_profile_id')
    )
    op.create_index('ix_profile_merges_survivor', 'profile_merges', ['workspace_id', 'survivor_profile_id'], unique=False)
    op.create_table('segment_members',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('segment_id', sa.String(length=64), nullable=False),
    sa.Column('profile_id', sa.String(length=32), nullable=False),
    sa.Column('enter_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'segment_id', 'profile_id')
    )
    op.create_index('ix_segment_members_profile', 'segment_members', ['workspace_id', 'profile_id'], unique=False)
    op.create_table('segments',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('segment_id', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('condition', sa.String(length=4096), nullable=False),
    sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'segment_id')
    )
    op.add_column('identifiers', sa.Column('cluster_id', sa.String(length=32), nullable=True))
    # Identifiers written before clusters: each profile is its own cluster.
    op.execute("UPDATE identifiers SET cluster_id = profile_id WHERE cluster_id IS NULL")
    op.create_index('ix_identifiers_cluster', 'identifiers', ['workspace_id', 'cluster_id'], unique=False)
    op.add_column('profiles', sa.Column('consents', sa.JSON(), nullable=True))
    op.add_column('profiles', sa.Column('computed', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('profiles', 'computed')
    op.drop_column('profiles', 'consents')
    op.drop_index('ix_identifiers_cluster', table_name='identifiers')
    op.drop_column('identifiers', 'cluster_id')
    op.drop_table('segments')
    op.drop_index('ix_segment_members_profile', table_name='segment_members')
    op.drop_table('segment_members')
    op.drop_index('ix_profile_merges_survivor', table_name='profile_merges')
    op.drop_table('profile_merges')
    op.drop_table('identity_settings')
    op.drop_table('erased_identifiers')
    op.drop_index('ix_edges_cluster', table_name='edges')
    op.drop_table('edges')
