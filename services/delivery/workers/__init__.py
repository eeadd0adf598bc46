"""Background loops of delivery: each round calls a use-case."""
