"""SQLAlchemy 2 set-up shared by every service: engine, unit of work, migrations, outbox."""

from cjo_platform.db.bulk import bulk_insert, bulk_update
from cjo_platform.db.engine import (
    Database,
    insert_ignore,
    insert_on_conflict,
    keys_in,
    keys_param,
    one_of,
    one_of_keys,
    pg_array,
    upsert,
    utc,
)
from cjo_platform.db.types import UtcDateTime

__all__ = ["Database", "UtcDateTime", "bulk_insert", "bulk_update", "insert_ignore",
           "insert_on_conflict", "keys_in", "keys_param", "one_of", "one_of_keys", "pg_array",
           "upsert", "utc"]
