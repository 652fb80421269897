"""Scenarios: what a peer holds and how the model is tested, beyond HL's label skew.

- :mod:`~hlgym.envs.scenarios.domain_shift`: peers hold their data in different styles
  (domains) and the reward tests on an unseen target domain (FedKA's setting).
- :mod:`~hlgym.envs.scenarios.modality_experts`: every example is seen through several views
  (modalities) and each peer holds one view of its examples (UniCon / BiCSL's setting).

Both give each peer one of k groups (a domain, a modality) by a rule: :func:`assign_peers`.
"""

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
