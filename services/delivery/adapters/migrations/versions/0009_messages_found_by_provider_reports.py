"""messages found by provider reports

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_messages_provider_message', 'messages',
                    ['workspace_id', 'provider_message_id'], unique=False)
    op.create_index('ix_messages_address', 'messages',
                    ['workspace_id', 'address', 'channel', 'sent_time'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_messages_address', table_name='messages')
    op.drop_index('ix_messages_provider_message', table_name='messages')
