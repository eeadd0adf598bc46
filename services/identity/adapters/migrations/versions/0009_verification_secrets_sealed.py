"""verification secrets sealed at rest (no schema change)

Seals every workspace's verification secret stored in plaintext with the first key of
``CJO_IDENTITY_SECRET_KEYS`` (the service passes its box as ``config.attributes["secret_box"]``).
Without a key nothing changes: the secrets stay plaintext, read as they are, until a key is
configured and ``python -m cjo_identity reseal-secrets`` runs. The downgrade opens them back to
plaintext (the release before reads them so), and refuses when a sealed one cannot be opened.

Revision ID: 0009
Revises: 0008
"""

from alembic import op
from sqlalchemy.orm import Session

from cjo_identity.adapters.settings import reseal_secrets
from cjo_platform.secret_box import SecretBox

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _box() -> SecretBox:
    box = op.get_context().config.attributes.get("secret_box")  # type: ignore[union-attr]
    return box if isinstance(box, SecretBox) else SecretBox([], "CJO_IDENTITY_SECRET_KEYS")


def upgrade() -> None:
    box = _box()
    if box.encrypts:
        # A secret sealed under a key not configured is left (and logged), not a failure.
        reseal_secrets(Session(bind=op.get_bind()), box, box)


def downgrade() -> None:
    box = _box()
    _, unreadable = reseal_secrets(Session(bind=op.get_bind()), box,
                                   SecretBox([], box.variable))
    if unreadable:
        raise RuntimeError(
            f"{unreadable} verification secret(s) cannot be decrypted with {box.variable}: "
            "configure the key they were sealed with before downgrading")
