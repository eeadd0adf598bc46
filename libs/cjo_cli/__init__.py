"""The `cjo` command: contexts, apply, get/list/describe, imports, reports, profiles, tail."""
