"""time-driven recompute (profiles.recompute_due) and background backfills

Revision ID: 0006
Revises: 0005
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('profiles', sa.Column('recompute_due', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True))
    op.create_index('ix_profiles_recompute_due', 'profiles', ['recompute_due'], unique=False)
    # Profiles with computed traits are due at once: the time worker recomputes each, which
    # sets its real next due time (without this, a window would lapse only at its next event).
    profiles = sa.table('profiles', sa.column('computed', sa.JSON()),
                        sa.column('recompute_due', cjo_platform.db.types.UtcDateTime()))
    op.execute(profiles.update().where(profiles.c.computed.is_not(None))
               .values(recompute_due=datetime(1970, 1, 1, tzinfo=UTC)))
    op.create_table(
        'backfills',
        sa.Column('workspace_id', sa.String(length=64), nullable=False),
        sa.Column('target', sa.String(length=80), nullable=False),
        sa.Column('definition', sa.String(length=4096), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('cursor', sa.String(length=32), nullable=False),
        sa.Column('profiles_scanned', sa.BigInteger(), nullable=False),
        sa.Column('profiles_total', sa.BigInteger(), nullable=False),
        sa.Column('create_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('start_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('end_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('lease_token', sa.String(length=32), nullable=True),
        sa.Column('lease_until', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint('workspace_id', 'target'),
    )
    op.create_index('ix_backfills_state', 'backfills', ['state', 'lease_until'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_backfills_state', table_name='backfills')
    op.drop_table('backfills')
    op.drop_index('ix_profiles_recompute_due', table_name='profiles')
    op.drop_column('profiles', 'recompute_due')
