"""Built-in meta-policies that need no training."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np

from hlgym.agents.base import evaluate
from hlgym.records import Evaluation


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


class FixedPeerAgent:
    """A constant policy: always sends the model to ``peer`` (then keeps it there).

    A benchmark id is only valid if no such policy solves it (docs/benchmark.md): the
    ``stay`` baseline is the best of them over the evaluation episodes
    (:func:`best_fixed_peer`). An offline or absent ``peer`` keeps the model at its holder,
    as the env does for any such action.

    Args:
        peer: The peer index, >= 0.
    """

    def __init__(self, peer: int = 0) -> None:
        if isinstance(peer, bool) or not isinstance(peer, int | np.integer) or peer < 0:
            raise ValueError(f"peer={peer!r} is not accepted; accepted: an integer peer index >= 0")
        self.peer = int(peer)

    def reset(self) -> None:
        """Stateless."""

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """``peer``, whatever the observation."""
        return self.peer


class StayAgent(FixedPeerAgent):
    """The ``stay`` baseline: the best fixed peer of the episodes it is evaluated on
    (:meth:`choose` tries every peer and keeps the best, :func:`best_fixed_peer`). It tests
    an id's validity: a benchmark that a constant policy solves teaches nothing. Its cost is
    ``n_peers`` evaluations."""

    def __init__(self) -> None:
        super().__init__(0)
        self.chosen = False

    def choose(self, env: gym.Env[Any, Any], episodes: int, seed: int = 0, progress: bool = False) -> Evaluation:
        """Try every peer on ``episodes`` episodes from ``seed``; keep the best; its evaluation."""
        self.peer, evaluation = best_fixed_peer(env, episodes, seed, progress)
        self.chosen = True
        return evaluation


def best_fixed_peer(
    env: gym.Env[Any, Any], episodes: int, seed: int = 0, progress: bool = False
) -> tuple[int, Evaluation]:
    """The ``stay`` baseline: every peer tried as a constant policy (:class:`FixedPeerAgent`)
    on the same episodes, the best kept: the one that reaches the goal most often, then in
    the fewest rounds, then with the least communication (ties: the lowest index).

    Args:
        env: The env (its action space's size is the number of peers tried).
        episodes: Episodes per peer, from ``seed`` on.
        seed: Seed of the first episode.
        progress: Show a progress bar per peer.

    Returns:
        The best peer and its evaluation.
    """
    n = int(env.action_space.n)  # type: ignore[attr-defined]
    results = [evaluate(FixedPeerAgent(k), env, episodes, seed, progress, label=f"stay at {k}") for k in range(n)]

    def rank(k: int) -> tuple[float, float, float, int]:
        s = results[k].summary
        return (-s["reached_goal"].mean, s["rounds"].mean, s["comm_cost"].mean, k)

    best = min(range(n), key=rank)
    return best, results[best]


class PowerOfChoiceAgent:
    """Loss-biased selection (Power-of-Choice, Cho, Wang & Joshi 2020): draw ``d`` online
    peers uniformly without replacement and send the model to the one whose probe loss
    under the current model is highest (the observation's ``probe_loss`` column).

    Args:
        d: Candidates per round, >= 1 (all online peers when ``d`` is larger).
        seed: Seed of the agent's own RNG (the candidates' draws).

    Raises:
        ValueError: At ``act`` on an observation without ``probe_loss`` rows (``hl_pca``).
    """

    LOSS_COLUMN = 2  # hlgym.envs.observation.PEER_FEATURES.index("probe_loss")
    observations = ("peer_features",)  # the observations it can act on

    def __init__(self, d: int = 3, seed: int | None = 0) -> None:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"d={d!r} is not accepted; accepted: an integer >= 1")
        self.d = d
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to forget: the RNG stream continues across episodes."""

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The highest probe loss among ``d`` random online peers (ties: the first drawn)."""
        rows = np.asarray(obs)
        if rows.ndim != 2:
            raise ValueError(
                f"power_of_choice needs the peer_features observation (one row per peer); got shape {rows.shape}"
            )
        return self.pick(np.flatnonzero(info["action_mask"]), rows[:, self.LOSS_COLUMN])

    def pick(self, candidates: np.ndarray, losses: np.ndarray) -> int:
        """``d`` of ``candidates`` drawn without replacement, then the one with the highest
        ``losses[candidate]`` (ties: the first drawn); also the gossip env's baseline's."""
        picks = self._rng.choice(candidates, size=min(self.d, candidates.size), replace=False)
        return int(picks[int(np.argmax(losses[picks]))])


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
    "power_of_choice": PowerOfChoiceAgent,
}
