"""request log: full gRPC method names

Orchestration's request log named methods bare ("CreateJourney") while every other service
used the full gRPC path; the shared unit of work now keys every answer by the path, so the stored
answers are renamed to keep repeats of request ids sent before the upgrade answered once.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

PREFIX = "/cjo.orchestration.v1.OrchestrationService/"


def upgrade() -> None:
    op.execute(sa.text("UPDATE request_log SET method = :prefix || method "
                       "WHERE method NOT LIKE '/%'").bindparams(prefix=PREFIX))


def downgrade() -> None:
    op.execute(sa.text("UPDATE request_log SET method = substr(method, :start) "
                       "WHERE method LIKE :like").bindparams(start=len(PREFIX) + 1,
                                                            like=PREFIX + "%"))
