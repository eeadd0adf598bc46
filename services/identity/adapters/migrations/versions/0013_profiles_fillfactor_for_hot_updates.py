"""profiles: fillfactor 80 on PostgreSQL, so the update every event makes to its profile's row
stays on the row's page (a HOT update: no index entry written)

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A storage parameter: pages written from now on keep the space free (existing ones are
    # not rewritten; they get it as their rows move). Nothing to do on SQLite.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE profiles SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE profiles RESET (fillfactor)")
