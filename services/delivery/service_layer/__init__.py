"""The delivery use-cases: each takes a unit of work and domain inputs, returns domain results."""
