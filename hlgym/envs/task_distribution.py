"""TaskDistributionEnv: every reset draws a task from families; fixed spaces for any task."""

from __future__ import annotations

import copy
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from hlgym.envs import observation
from hlgym.envs.config import PeerSelectionConfig, make_config, warn_if_longer
from hlgym.envs.episode import Episode, ResetNeededError
from hlgym.envs.face import EpisodeView
from hlgym.envs.peer_selection import PeerSelectionEnv
from hlgym.envs.render import RENDER_MODES, check_render_mode
from hlgym.envs.tasks import TaskFamily, TaskSpec

__all__ = ["PRESENT", "TaskDistributionEnv", "draw_task", "pad_mask", "pad_rows", "task_action", "task_info"]

PRESENT = "present"
"""The observation's last column: 1 on a peer of the task, 0 on the padding rows."""


def draw_task(
    spec: TaskSpec, families: tuple[TaskFamily, ...], rng: np.random.Generator
) -> tuple[TaskFamily, dict[str, Any], str, int]:
    """A reset's draws, in order: a family (uniformly), its task's fields, then the seed of
    the task's episode; returns them with the task's key (:meth:`TaskSpec.key`)."""
    family = families[int(rng.integers(len(families)))]
    fields = family.draw(rng)
    return family, fields, spec.key(family, fields), int(rng.integers(2**31 - 1))


def pad_rows(obs: np.ndarray, max_peers: int) -> np.ndarray:
    """A task's observation as ``max_peers`` rows, with the :data:`PRESENT` column last."""
    out = np.zeros((max_peers, obs.shape[1] + 1), dtype=np.float32)
    out[: obs.shape[0], :-1] = obs
    out[: obs.shape[0], -1] = 1.0
    return out


def pad_mask(mask: np.ndarray | None, max_peers: int) -> np.ndarray:
    """A task's action mask padded with False to ``max_peers`` (all False for None)."""
    out = np.zeros(max_peers, dtype=bool)
    if mask is not None:
        out[: mask.size] = mask
    return out


def task_info(
    info: dict[str, Any], mask: np.ndarray, task: dict[str, Any], config: PeerSelectionConfig, absent: bool = False
) -> dict[str, Any]:
    """The task env's ``info`` with the padded ``mask``, the ``task``, its ``n_peers`` and
    ``goal``, and whether the action named a padding row."""
    return {
        **info,
        "action_mask": mask,
        "task": dict(task),
        "n_peers": config.n_peers,
        "goal": config.goal,
        "absent_peer": absent,
    }


def task_action(action: Any, max_peers: int, n_peers: int, holder: int) -> tuple[int, bool]:
    """The task's peer for ``action`` and whether it named a padding row (then the holder:
    the model stays, a legal action).

    Raises:
        ValueError: If ``action`` is no integer in ``[0, max_peers)``.
    """
    value = np.asarray(action)
    if value.size != 1 or not np.issubdtype(value.dtype, np.integer) or not 0 <= int(value.reshape(())) < max_peers:
        raise ValueError(f"action={action!r} is not accepted; accepted: an integer peer index in [0, {max_peers - 1}]")
    peer = int(value.reshape(()))
    return (holder, True) if peer >= n_peers else (peer, False)


class TaskDistributionEnv(EpisodeView, gym.Env[np.ndarray, np.int64]):
    """Meta-learning across tasks: each episode is a task drawn from a family.

    ## Description

    The config's ``tasks`` (:class:`~hlgym.envs.tasks.TaskSpec`) lists train and held-out
    families; ``tasks.split`` says which a reset draws from. A reset draws a family
    (uniformly), then the task's fields (each ``choice`` uniformly): the number of peers,
    partition and its parameters, topology, transfer mode, scenario, goal, any config field.
    The episode is then a :class:`~hlgym.envs.PeerSelectionEnv` with the config plus those
    fields (one env per distinct task, built at its first draw and kept).

    ## Spaces

    Fixed for every task, so one policy trains on all of them: observation
    ``Box(0, 1, (max_peers, F + 1))``, the task's ``peer_features`` rows first, then zero
    rows; the last column (:data:`PRESENT`) is 1 on the task's peers. Actions
    ``Discrete(max_peers)``; :meth:`action_masks` (and ``info["action_mask"]``) allow only the
    task's online peers. An absent peer's index (which a policy without masks may sample)
    keeps the model at its holder, as the holder's own index does, with
    ``info["absent_peer"]`` True. Absent rows are all zeros, which
    :class:`~hlgym.agents.attention.PeerSetNet` (the attention policy) leaves out of
    attention, scores and value.

    ## Rewards, episode end, info

    The task's (its own goal). ``info`` is the task env's, plus ``task`` (``family`` and the
    drawn fields), ``n_peers`` and ``goal``; ``info["action_mask"]`` is padded to
    ``max_peers``, the other per-peer arrays are the task's.

    ## Arguments

    ``TaskDistributionEnv(config=None, render_mode=None, **overrides)``, as
    :class:`~hlgym.envs.PeerSelectionEnv`; the config must have ``tasks``.

    ## Randomness

    ``reset(seed)`` seeds ``self.np_random``, which draws the family, the task and the
    seed the task env's reset gets: the same seed gives the same task and episode.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 2}  # noqa: RUF012  (Gymnasium's plain-dict convention)

    def __init__(
        self,
        config: PeerSelectionConfig | dict[str, Any] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        cfg = make_config(config, **overrides)
        warn_if_longer(config, overrides, cfg)
        if cfg.tasks is None:
            raise ValueError(
                "tasks=None is not accepted by TaskDistributionEnv; accepted: a task spec (see "
                "hlgym.envs.tasks), or PeerSelectionEnv for one task"
            )
        check_render_mode(render_mode)
        self.config = cfg
        self.render_mode = render_mode
        self.spec_tasks: TaskSpec = cfg.tasks
        self.families: tuple[TaskFamily, ...] = cfg.tasks.families()
        first = next(self.families[0].tasks())
        task_cfg = cfg.replace(tasks=None, **first)
        self.feature_names: tuple[str, ...] = (*observation.columns(task_cfg), PRESENT)
        """The observation's columns: the task env's and :data:`PRESENT`."""
        n = self.spec_tasks.max_peers
        self.observation_space = spaces.Box(0.0, 1.0, (n, len(self.feature_names)), np.float32)
        self.action_space = spaces.Discrete(n)
        self._envs: dict[str, PeerSelectionEnv] = {}
        self._env: PeerSelectionEnv | None = None
        self.task: dict[str, Any] = {}
        """The current task: ``family`` and the drawn fields (empty before the first reset)."""

    # ------------------------------------------------------------------ Gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a family and a task, then start the task's episode.

        Args:
            seed: Seeds the environment's RNG, which drives every draw.
            options: Not used; must be None or empty.
        """
        super().reset(seed=seed)
        family, fields, key, task_seed = draw_task(self.spec_tasks, self.families, self.np_random)
        self.task = {"family": family.name, **fields}
        try:  # the data may not serve a task (a partition asking for more samples than there are)
            if key not in self._envs:
                self._envs[key] = PeerSelectionEnv(self.config.replace(tasks=None, **fields), self.render_mode)
            self._env = self._envs[key]
            obs, info = self._env.reset(seed=task_seed, options=options)
        except ValueError as exc:
            raise ValueError(f"tasks family {family.name!r}, task {fields}: {exc}") from exc
        return self._pad(obs), self._info(info)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Send the model to peer ``action`` of the current task (see PeerSelectionEnv.step)."""
        env = self._current()
        # A padding row's index (an unmasked policy may sample it) keeps the model where it is:
        # the holder's own index, a legal action; info["absent_peer"] tells it apart.
        peer, absent = task_action(action, self.spec_tasks.max_peers, env.config.n_peers, env.route[-1])
        obs, reward, terminated, truncated, info = env.step(peer)
        return self._pad(obs), reward, terminated, truncated, self._info(info, absent)

    def render(self) -> str | np.ndarray | None:
        """The current task's render (see PeerSelectionEnv.render)."""
        return self._current().render()

    # ------------------------------------------------------------------ more than Gymnasium's

    def action_masks(self) -> np.ndarray:
        """The task's online peers, padded with False to ``max_peers``; all False before
        the first reset."""
        return pad_mask(None if self._env is None else self._env.action_masks(), self.spec_tasks.max_peers)

    def full_test_accuracy(self) -> float:
        """The current task's model on the whole test set (see PeerSelectionEnv)."""
        return self._current().full_test_accuracy()

    @property
    def task_env(self) -> PeerSelectionEnv:
        """The current task's env (raises before the first reset)."""
        return self._current()

    @property
    def n_peers(self) -> int:
        """Peers of the current task (0 before the first reset)."""
        return 0 if self._env is None else self._env.config.n_peers

    def viewed(self) -> Episode | None:
        """The current task's episode (what :class:`~hlgym.envs.face.EpisodeView` shows:
        what EpisodeRecorder and the plots read); None before the first reset."""
        env = self.__dict__.get("_env")
        return None if env is None else env.episode

    def __deepcopy__(self, memo: dict[int, Any]) -> TaskDistributionEnv:
        """A copy that plays on from the current task (what LookaheadAgent's copies need):
        the other tasks' envs are not copied (a copy rebuilds one when it draws it)."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for name, value in self.__dict__.items():
            if name != "_envs":
                setattr(new, name, copy.deepcopy(value, memo))
        current = copy.deepcopy(self._env, memo)  # the copy made above (memo), or None
        kept = {key: current for key, env in self._envs.items() if env is self._env and current is not None}
        new.__dict__["_envs"] = kept
        return new

    # ------------------------------------------------------------------ internals

    def _current(self) -> PeerSelectionEnv:
        if self._env is None:
            raise ResetNeededError("call reset() first: no task has been drawn yet")
        return self._env

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        return pad_rows(obs, self.spec_tasks.max_peers)

    def _info(self, info: dict[str, Any], absent: bool = False) -> dict[str, Any]:
        return task_info(info, self.action_masks(), self.task, self._current().config, absent)
