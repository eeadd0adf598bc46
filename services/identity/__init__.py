"""cjo identity: workspaces and API keys, events from every source, and one profile per person."""
