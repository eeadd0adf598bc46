"""Background loops of orchestration: each round calls a use-case."""
