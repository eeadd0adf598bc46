"""canonical email addresses in suppressions

Revision ID: 0003
Revises: 0002
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

import cjo_platform.db.types

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# Rows read, and at most as many written, at a time: memory stays flat however long the list
# (the migrate init container has 256Mi).
BATCH = 1000


def upgrade() -> None:
    # Suppressions are now looked up in their canonical form (domain/addresses.py) as well as
    # the spelling asked about, and written in both. Add the canonical row for every email row
    # stored in another spelling (an upper-case or Unicode domain, a decomposed local part), so
    # each spelling of one mailbox finds it. Additive: the release before this one, whose pods
    # keep serving during a rolling update (and again after a rollback), looks addresses up
    # exactly as typed, so every original row stays. Where spellings meet, the canonical row
    # (added, or there already) takes the earliest one's reason and time.
    # The rule lives in Python (IDNA), so rows are streamed and only the few not canonical yet
    # are written, in batches.
    from sqlalchemy.orm import Session

    from cjo_delivery.domain.addresses import canonical_email
    from cjo_platform.db import upsert

    table = sa.Table('suppressions', sa.MetaData(),
                     sa.Column('workspace_id', sa.String), sa.Column('channel', sa.String),
                     sa.Column('address', sa.String), sa.Column('reason', sa.String),
                     sa.Column('create_time', cjo_platform.db.types.UtcDateTime),
                     sa.PrimaryKeyConstraint('workspace_id', 'channel', 'address'))
    c = table.c

    def earliest(new: Any) -> dict[str, Any]:
        # Batches come in key order, not time order: whichever row is earlier wins.
        earlier = new.create_time < c.create_time
        return {'reason': sa.case((earlier, new.reason), else_=c.reason),
                'create_time': sa.case((earlier, new.create_time), else_=c.create_time)}

    bind = op.get_bind()
    # A server-side cursor on PostgreSQL, fetched BATCH rows at a time (for this query only:
    # Connection.execution_options would change the connection alembic goes on using). The
    # cursor's snapshot does not see the rows written meanwhile; on SQLite those are canonical,
    # so skipped if seen.
    rows = bind.execute(sa.select(c.workspace_id, c.address, c.reason, c.create_time)
                        .where(c.channel == 'email').order_by(c.workspace_id, c.address),
                        execution_options={'yield_per': BATCH})
    with Session(bind=bind) as session:
        for batch in rows.partitions():
            canonical: dict[tuple[str, str], dict[str, Any]] = {}
            for workspace_id, address, reason, create_time in batch:
                key = (workspace_id, canonical_email(address))
                if key[1] == address:
                    continue
                row = canonical.get(key)
                if row is None or create_time < row['create_time']:  # one upsert per key
                    canonical[key] = {'workspace_id': workspace_id, 'channel': 'email',
                                      'address': key[1], 'reason': reason,
                                      'create_time': create_time}
            upsert(session, table, list(canonical.values()), earliest)


def downgrade() -> None:
    # Nothing to undo: upgrade() deleted no row and renamed none, so every row the older code
    # looks up (the spelling it was given) is still there. The canonical rows stay: to the
    # older code they are one more spelling of a suppressed mailbox, rightly suppressed. What
    # this release suppressed is stored in the spelling given too (repository.suppress), which
    # is the one the older code will be asked about.
    pass
