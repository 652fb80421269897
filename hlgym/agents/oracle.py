"""The oracle: a beam search over copies of the env that sees the future (a ceiling).

At an episode's first decision :class:`OracleAgent` copies the env (``copy.deepcopy``: the
copy carries the RNG states, so it meets the very batches, link failures and offline draws
the real episode will) and searches routes round by round: every beam tries every online
peer on a copy of its own, and the ``width`` best children go on, ranked by goal reached,
then accuracy, then communication (the least). The search stops at the first round in which
a child reaches the goal, or at the round limit; the best route found is then played. On
CPU the real episode replays the search bit for bit, so the oracle's figures are what its
route achieves.

It is a ceiling, never a competitor: no deployable policy knows the next rounds' batches.
Its cost is about ``width * n_peers`` env steps (and as many deep copies) per round:
docs/benchmark.md gives the measured time per episode.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np


class _Beam(NamedTuple):
    env: gym.Env[Any, Any]
    route: list[int]
    info: dict[str, Any]
    reached: bool
    done: bool


def _rank(beam: _Beam) -> tuple[bool, float, float]:
    """Goal reached, then accuracy, then the least communication."""
    return beam.reached, float(beam.info["accuracy"]), -float(beam.info["comm_cost"])


class OracleAgent:
    """Beam search over deep copies of the env (see the module docstring).

    Args:
        env: The environment it plays in (wrapped or not); given later with :meth:`bind`.
        width: Beams kept per round, >= 1 (4: 5 s an episode of ``hlgym/PeerSelection-v0``,
            9-14 s on a 20-peer task, single-threaded on a 2-core AMD EPYC; docs/benchmark.md).
    """

    def __init__(self, env: gym.Env[Any, Any] | None = None, width: int = 4) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width={width!r} is not accepted; accepted: an integer >= 1")
        self.env, self.width = env, width
        self._plan: list[int] = []
        self._step = 0
        self.searched_steps = 0
        """Env steps the last search took (its cost)."""
        self.levels: list[tuple[float, float]] = []
        """The last search's best child per round: its accuracy and communication cost. With
        the goal lifted out of reach this is the oracle's curve for every goal: a goal ``g``
        is reached at the first round whose best accuracy is ``>= g`` (bench/validity.py)."""

    def bind(self, env: gym.Env[Any, Any]) -> OracleAgent:
        """Play in ``env`` from now on; returns the agent."""
        self.env = env
        return self

    def reset(self) -> None:
        """Forget the plan: the next decision searches the new episode."""
        self._plan, self._step = [], 0

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The next peer of the best route found from the episode's first decision."""
        if self.env is None:
            raise RuntimeError("OracleAgent has no env to search in: OracleAgent(env) or agent.bind(env)")
        if self._step >= len(self._plan):  # a new episode (or a route that ended early)
            self._plan, self._step = self.search(self.env.unwrapped, info), 0
        peer = self._plan[self._step]
        self._step += 1
        return peer

    def search(self, env: gym.Env[Any, Any], info: dict[str, Any]) -> list[int]:
        """The best route from ``env``'s current state (``info``: its last info)."""
        beams = [_Beam(env, [], info, False, False)]
        self.searched_steps, self.levels = 0, []
        while True:
            children = []
            for beam in beams:
                if beam.done:
                    children.append(beam)
                    continue
                for peer in np.flatnonzero(beam.info["action_mask"]):
                    sim = copy.deepcopy(beam.env)
                    _, _, terminated, truncated, step_info = sim.step(int(peer))
                    self.searched_steps += 1
                    route = [*beam.route, int(peer)]
                    children.append(_Beam(sim, route, step_info, bool(terminated), bool(terminated or truncated)))
            children.sort(key=_rank, reverse=True)
            beams = children[: self.width]
            self.levels.append((float(beams[0].info["accuracy"]), float(beams[0].info["comm_cost"])))
            if beams[0].reached or all(b.done for b in beams):
                return beams[0].route
