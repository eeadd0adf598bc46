"""canonical email addresses in suppressions

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
    # Suppressions were stored and compared as typed; they are now compared in the canonical
    # form (domain/addresses.py), so a row in another spelling (an upper-case or Unicode domain,
    # a decomposed local part) would stop suppressing its mailbox. Rewrite each email row to
    # its canonical form; where several spellings meet, the earliest row (its reason) stays.
    # The rule lives in Python (IDNA), so rows are read and the changed ones written back.
    from cjo_delivery.domain.addresses import canonical_email

    table = sa.table('suppressions', sa.column('workspace_id', sa.String),
                     sa.column('channel', sa.String), sa.column('address', sa.String),
                     sa.column('create_time', cjo_platform.db.types.UtcDateTime))
    c = table.c
    bind = op.get_bind()
    rows = bind.execute(sa.select(c.workspace_id, c.address).where(c.channel == 'email')
                        .order_by(c.create_time, c.address)).all()
    keeper: dict[tuple[str, str], str] = {}
    for workspace_id, address in rows:
        keeper.setdefault((workspace_id, canonical_email(address)), address)
    kept = {(workspace_id, address) for (workspace_id, _), address in keeper.items()}
    gone = [{'w': w, 'a': a} for w, a in rows if (w, a) not in kept]
    renamed = [{'w': w, 'a': a, 'canonical': canonical} for (w, canonical), a in keeper.items()
               if a != canonical]
    mine = sa.and_(c.workspace_id == sa.bindparam('w'), c.channel == 'email',
                   c.address == sa.bindparam('a'))
    if gone:  # first, so no renamed row collides with a spelling still there
        bind.execute(table.delete().where(mine), gone)
    if renamed:
        bind.execute(table.update().where(mine)
                     .values(address=sa.bindparam('canonical')), renamed)


def downgrade() -> None:
    # The canonical spelling is one of the spellings the older code compared; nothing to undo.
    pass
