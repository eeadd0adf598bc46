"""Settings of the decisioning service, from environment variables (validated at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from cjo_platform.config import Env


@dataclass(frozen=True)
class DecisioningSettings:
    # Reproducible decisions: each BatchDecide's random generator is seeded from this, the
    # point and the items' request ids (or profile ids). None: fresh entropy per call.
    seed: int | None
    # How long a process decides with the models it loaded before it checks whether another
    # replica (or the learning worker) saved newer ones.
    model_refresh_seconds: float
    # Posterior draws per decision used to estimate pick probabilities (Thompson sampling).
    draws: int
    # Deadline of one call to identity or content.
    peer_timeout_seconds: float


def load_decisioning_settings(env: Env) -> DecisioningSettings:
    prefix = "CJO_DECISIONING_"
    raw_seed = env.raw(f"{prefix}SEED")
    seed: int | None = None
    if raw_seed:
        seed = env.int(f"{prefix}SEED", 0, minimum=0, maximum=2**63 - 1)
    return DecisioningSettings(
        seed=seed,
        model_refresh_seconds=env.float(f"{prefix}MODEL_REFRESH_SECONDS", 1.0, minimum=0.0),
        draws=env.int(f"{prefix}DRAWS", 256, minimum=1, maximum=100_000),
        peer_timeout_seconds=env.float(f"{prefix}PEER_TIMEOUT_SECONDS", 10.0, minimum=0.1))
