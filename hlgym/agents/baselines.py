"""Built-in meta-policies that need no training."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
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


class LookaheadAgent:
    """A strong non-learned reference: before each round it plays every online peer on a
    copy of the environment (``copy.deepcopy``) and sends the model to the best.

    A candidate's score is its hop and then ``horizon - 1`` rounds of the greedy
    nearest-unvisited route, on the copy: the sum of their rewards (``by="reward"``) or the
    accuracy after them (``by="accuracy"``); ties go to the lowest peer index. The copy
    carries the env's RNG states, so the candidate sees the very batches, link failures and
    offline draws the real round would: an oracle of the next rounds, not a policy that could
    be deployed. It costs ``n_peers * horizon`` env steps (and ``n_peers`` copies) per step.

    Args:
        env: The environment it plays in (wrapped or not); given later with :meth:`bind`
            when not known yet.
        horizon: Rounds played per candidate, >= 1.
        by: ``"reward"`` or ``"accuracy"``.
    """

    BY = ("reward", "accuracy")

    def __init__(self, env: gym.Env[Any, Any] | None = None, horizon: int = 1, by: str = "reward") -> None:
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
            raise ValueError(f"horizon={horizon!r} is not accepted; accepted: an integer >= 1")
        if by not in self.BY:
            raise ValueError(f"by={by!r} is not accepted; accepted: {', '.join(repr(b) for b in self.BY)}")
        self.env, self.horizon, self.by = env, horizon, by

    def bind(self, env: gym.Env[Any, Any]) -> LookaheadAgent:
        """Play in ``env`` from now on; returns the agent."""
        self.env = env
        return self

    def reset(self) -> None:
        """Stateless: every decision is made afresh on a copy of the env."""

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The online peer whose simulated next ``horizon`` rounds score best."""
        if self.env is None:
            raise RuntimeError("LookaheadAgent has no env to look ahead in: LookaheadAgent(env) or agent.bind(env)")
        live = self.env.unwrapped
        scores = {int(p): self._score(copy.deepcopy(live), int(p)) for p in np.flatnonzero(info["action_mask"])}
        return max(scores, key=lambda p: (scores[p], -p))

    def _score(self, sim: gym.Env[Any, Any], peer: int) -> float:
        total, action, rollout = 0.0, peer, GreedyNearestAgent()
        for _ in range(self.horizon):
            _, reward, terminated, truncated, info = sim.step(action)
            total += float(reward)
            if terminated or truncated:
                break
            action = rollout.act(None, info)
        return total if self.by == "reward" else float(info["accuracy"])


BASELINES: dict[str, type] = {
    "random": RandomAgent,
    "round_robin": RoundRobinAgent,
    "greedy": GreedyNearestAgent,
}
