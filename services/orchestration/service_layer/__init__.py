"""The orchestration use-cases: each takes a unit of work and domain inputs and returns
domain results."""
