"""messages: one row per message for the channel report

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('messages',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('message_key', sa.String(length=128), nullable=False),
    sa.Column('journey_id', sa.String(length=128), server_default='', nullable=False),
    sa.Column('channel', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('content_key', sa.String(length=128), server_default='', nullable=False),
    sa.Column('variant', sa.String(length=128), server_default='', nullable=False),
    sa.Column('sent_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('delivered_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('opened_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('clicked_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('bounced_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('unsubscribed_time', cjo_platform.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('workspace_id', 'message_key')
    )
    op.create_index('ix_messages_journey', 'messages', ['workspace_id', 'journey_id'], unique=False)
    # Messages of the facts recorded before this revision.
    outcomes = ('sent', 'delivered', 'opened', 'clicked', 'bounced', 'unsubscribed')
    firsts = ', '.join(f"min(CASE WHEN type = 'message_{o}' THEN occur_time END)" for o in outcomes)
    kinds = ', '.join(f"'message_{o}'" for o in ('requested', *outcomes))
    op.execute(
        "INSERT INTO messages (workspace_id, message_key, journey_id, channel, content_key,"
        " variant, " + ', '.join(f'{o}_time' for o in outcomes) + ")"
        " SELECT workspace_id, coalesce(nullif(message_id, ''), fact_id), max(journey_id),"
        " max(channel), max(content_key), max(variant), " + firsts +
        f" FROM facts WHERE type IN ({kinds})"
        " GROUP BY workspace_id, coalesce(nullif(message_id, ''), fact_id)")


def downgrade() -> None:
    op.drop_index('ix_messages_journey', table_name='messages')
    op.drop_table('messages')
