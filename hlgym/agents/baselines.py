"""Built-in meta-policies that need no training."""

from __future__ import annotations

from typing import Any

import numpy as np


class RandomAgent:
    """Picks a random online peer (the reference's baseline).

    Args:
        seed: Seed of the agent's own RNG.
    """

    def __init__(self, seed: int | None = 0) -> None:
        self._seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to forget: the RNG stream continues across episodes."""

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """A uniformly random peer among ``info["action_mask"]``."""
        return int(self._rng.choice(np.flatnonzero(info["action_mask"])))


class RoundRobinAgent:
    """Visits the peers in index order from the holder: ``holder + 1, holder + 2, ...``,
    skipping offline peers."""

    def reset(self) -> None:
        """Stateless."""

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The next online peer after the holder, cyclically."""
        mask = np.asarray(info["action_mask"])
        n = mask.size
        holder = int(info["holder"])
        for k in range(1, n + 1):
            peer = (holder + k) % n
            if mask[peer]:
                return peer
        return holder


class GreedyNearestAgent:
    """Cheapest hop to an online peer that has not held the model recently.

    Args:
        window: How many past holders count as recent; None means ``n_peers - 1``, which
            makes the route a nearest-neighbour tour over all peers.
    """

    def __init__(self, window: int | None = None) -> None:
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ValueError(f"window={window!r} is not accepted; accepted: None or an integer >= 1")
        self.window = window
        self._history: list[int] = []

    def reset(self) -> None:
        """Forget the route."""
        self._history = []

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The online, not recently visited peer with the smallest hop cost."""
        costs = np.asarray(info["hop_costs"], dtype=np.float64)
        mask = np.asarray(info["action_mask"], dtype=bool)
        holder = int(info["holder"])
        if not self._history or self._history[-1] != holder:
            self._history.append(holder)
        window = self.window if self.window is not None else costs.size - 1
        recent = set(self._history[-window:])
        online = [int(p) for p in np.flatnonzero(mask)]
        candidates = [p for p in online if p not in recent]
        if not candidates:
            candidates = [p for p in online if p != holder] or [holder]
        return int(min(candidates, key=lambda p: (costs[p], p)))


BASELINES: dict[str, type] = {
    "random": RandomAgent,
    "round_robin": RoundRobinAgent,
    "greedy": GreedyNearestAgent,
}
