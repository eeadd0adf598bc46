"""API key scopes, secret hints, rotation (the previous secret and its expiry), revocation and
last use

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing keys become ADMIN (the server default): every call they made before still works.
    T = cjo_platform.db.types.UtcDateTime(timezone=True)
    op.add_column('api_keys', sa.Column('scope', sa.Integer(), server_default='1',
                                        nullable=False))
    op.add_column('api_keys', sa.Column('secret_hint', sa.String(length=64), server_default='',
                                        nullable=False))
    op.add_column('api_keys', sa.Column('previous_secret_hash', sa.String(length=64),
                                        nullable=True))
    op.add_column('api_keys', sa.Column('previous_secret_expire_time', T, nullable=True))
    op.add_column('api_keys', sa.Column('revoke_time', T, nullable=True))
    op.add_column('api_keys', sa.Column('last_use_time', T, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        for column in ('last_use_time', 'revoke_time', 'previous_secret_expire_time',
                       'previous_secret_hash', 'secret_hint', 'scope'):
            batch.drop_column(column)
