"""The Agent protocol and the evaluation loop (the records they fill: :mod:`hlgym.records`)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
from tqdm.auto import tqdm

from hlgym.records import EpisodeRecord, EpisodeRecorder, Evaluation, summarize


@runtime_checkable
class Agent(Protocol):
    """A meta-policy: anything with these two methods runs through :func:`evaluate`.

    ``act`` receives the observation and the info dict of the last ``reset``/``step``
    (``info["holder"]``, ``info["hop_costs"]``, ``info["action_mask"]`` and the rest of
    :class:`~hlgym.envs.PeerSelectionEnv`'s info) and returns the next peer.

    An agent may also have ``bind(env)``: :func:`evaluate` calls it with the env before the
    first episode, so the agent can read its spaces (``env.action_space.n`` peers) or, as
    the lookahead and the oracle do, play on copies of it.
    """

    def reset(self) -> None:
        """Called at the start of every episode."""

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The peer to send the model to next."""
        ...


def run_episode(agent: Agent, env: gym.Env[Any, Any], seed: int) -> EpisodeRecord:
    """Play one episode of ``agent`` in ``env`` from ``reset(seed=seed)``."""
    agent.reset()
    obs, info = env.reset(seed=seed)
    recorder = EpisodeRecorder(seed, info, env)
    done = False
    while not done:
        action = int(agent.act(obs, info))
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        recorder.step(float(reward), bool(terminated), info)
    return recorder.finish(info)


def evaluate(
    agent: Agent,
    env: gym.Env[Any, Any],
    episodes: int,
    seed: int = 0,
    progress: bool = False,
    label: str | None = None,
) -> Evaluation:
    """Run ``episodes`` episodes with seeds ``seed, seed + 1, ...``.

    Args:
        agent: Any object with the :class:`Agent` methods.
        env: A PeerSelectionEnv, possibly wrapped (``gymnasium.make``).
        episodes: Number of episodes, >= 1.
        seed: Seed of the first episode.
        progress: Show a progress bar.
        label: The progress bar's label (default: the agent's class name).

    Returns:
        The per-episode records and their summary.
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r} is not accepted; accepted: an integer >= 1")
    if not isinstance(agent, Agent):
        raise TypeError(f"agent={agent!r} does not satisfy the Agent protocol (reset() and act(obs, info))")
    seeds = range(seed, seed + episodes)
    bind = getattr(agent, "bind", None)
    if callable(bind):
        bind(env)
    bar = tqdm(seeds, desc=label or type(agent).__name__, disable=not progress)
    records = [run_episode(agent, env, s) for s in bar]
    return Evaluation(records, summarize(records))
