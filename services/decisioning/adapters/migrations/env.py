from cjo_decisioning.adapters.tables import metadata
from cjo_platform.db.migrations import run_env

run_env(metadata)
