"""Groups of peers: the rule that gives each peer one of k groups (a scenario's domain or view)."""

from __future__ import annotations

import numpy as np

PEER_RULES = ("cycle", "blocks", "random")


def assign_peers(rule: str, n_peers: int, n_groups: int, rng: np.random.Generator, field: str = "rule") -> np.ndarray:
    """Which of ``n_groups`` groups (an index) each peer holds.

    ``cycle``: peer ``i`` holds group ``i % n_groups``; ``blocks``: contiguous runs of peers
    share a group (peer ``i`` holds ``i * n_groups // n_peers``); ``random``: each peer's
    group drawn uniformly from ``rng`` (per episode). ``cycle`` and ``blocks`` draw nothing.

    Raises:
        ValueError: For an unknown rule (named as the config ``field``).
    """
    i = np.arange(n_peers)
    if rule == "cycle":
        return i % n_groups
    if rule == "blocks":
        return i * n_groups // n_peers
    if rule == "random":
        return rng.integers(0, n_groups, size=n_peers)
    raise ValueError(f"{field}={rule!r} is not known; accepted: {', '.join(PEER_RULES)}")
