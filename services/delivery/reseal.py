"""``python -m cjo_delivery reseal-secrets``: rewrite every provider's stored secrets under the
first key of ``CJO_DELIVERY_SECRET_KEYS`` (or, with ``--plaintext --confirm``, back to plaintext
JSON for a rollback to a release without encryption).

An explicit command rather than part of ``migrate``: migrations run in each new pod's
initContainer while pods of the previous release still serve, and those must keep reading
every row. The operator runs it once every pod has the intended keys; its exit code says
whether anything is left in another form, which is what dropping an old key waits for.
"""

from __future__ import annotations

import argparse
import sys

from cjo_delivery.adapters.secret_box import KEYS_VARIABLE, SecretBox
from cjo_delivery.service_layer import secrets
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.logging import get_logger

log = get_logger(__name__)

COMMAND = "reseal-secrets"
# Exit codes: 0 every row is in the target form; 1 some row is unreadable or left; 2 refused
# (and bad configuration); 3 the command failed (cjo_platform.rpc.server.COMMAND_FAILED).
DONE, LEFT, REFUSED = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m cjo_delivery {COMMAND}",
        description="Re-encrypt every provider's stored secrets under the first key of "
                    f"{KEYS_VARIABLE}; exits 1 when a row is unreadable or left in another form.")
    parser.add_argument("--plaintext", action="store_true",
                        help="decrypt every row back to plaintext JSON instead (for a rollback "
                             "to a release without encryption); needs --confirm")
    parser.add_argument("--confirm", action="store_true",
                        help="confirm --plaintext: the secrets are then stored unencrypted")
    return parser


def reseal_command(transactions: Transactions, box: SecretBox, args: list[str]) -> int:
    """Runs the command (its arguments after the command name); returns the exit code and
    prints ``key_id=... rewritten=N unreadable=N left=N`` on stdout."""
    options = _parser().parse_args(args)
    if not box.encrypts:
        print(f"{COMMAND}: {KEYS_VARIABLE} is not set: there is no key to encrypt or decrypt "
              "with", file=sys.stderr)
        return REFUSED
    if options.plaintext and not options.confirm:
        print(f"{COMMAND}: refusing to store every provider's secrets unencrypted without "
              "--confirm (meant only for a rollback to a release without encryption)",
              file=sys.stderr)
        return REFUSED
    writer = SecretBox([]) if options.plaintext else box
    key_id = "plaintext" if options.plaintext else box.current_key_id
    rewritten, unreadable = transactions.run_sync(
        lambda uow: secrets.reseal(uow, box, writer))
    # Counted after the commit, apart from the rewrite: a row another pod wrote in another
    # form meanwhile shows here, so exit 0 means nothing is left at this moment.
    left = transactions.run_sync(lambda uow: secrets.count_left(uow, writer))
    log.info("provider secrets resealed", key_id=key_id, rewritten=rewritten,
             unreadable=unreadable, left=left)
    print(f"key_id={key_id} rewritten={rewritten} unreadable={unreadable} left={left}",
          flush=True)
    return LEFT if unreadable or left else DONE
