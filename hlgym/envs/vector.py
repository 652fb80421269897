"""Many episodes at once: the batched engine and Gymnasium's vector env over it.

:class:`BatchedPeerSelection` is ``n_envs`` :class:`~hlgym.envs.episode.Episode` objects and
one :class:`~hlgym.models.batched.StackedModels` with a slot each, driven by the same
:class:`~hlgym.envs.rounds.RoundRunner` as a lone :class:`~hlgym.envs.PeerSelectionEnv`: every
copy's seed, data split, probes, topology, route, rewards and masks are its own, drawn exactly
as a lone env draws them; only the model work is batched (one call trains every copy whose
model was delivered, one evaluates them all on the shared test images, one runs the probes).
Each copy draws its initial weights and batch order from its own generator, so the
trajectories are those of independent envs up to float rounding (tests/test_batched.py).

:class:`BatchedPeerSelectionVectorEnv` is the Gymnasium ``VectorEnv`` (the registered ids'
``vector_entry_point``: ``gymnasium.make_vec(id, num_envs)`` builds it). The
Stable-Baselines3 ``VecEnv`` over the same engine lives with the other SB3 code:
:class:`hlgym.agents.sb3.BatchedPeerSelectionVecEnv`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import nn

from hlgym.envs import components, observation
from hlgym.envs.config import PeerSelectionConfig, make_config
from hlgym.envs.episode import Episode, ResetNeededError, StepResult
from hlgym.envs.face import EpisodeView
from hlgym.envs.observation import spaces_for
from hlgym.envs.render import RENDER_MODES, check_render_mode
from hlgym.envs.rounds import RoundRunner, model_spec
from hlgym.envs.task_distribution import draw_task, pad_mask, pad_rows, task_action, task_info
from hlgym.models.batched import StackedModels

# What a copy cannot do on its own: the engine steps and resets all copies together.
ENGINE_ONLY = frozenset({"step", "reset"})


def check_copy_method(name: str) -> None:
    """Refuse ``env_method`` / ``call`` of a method only the vector env may run."""
    if name in ENGINE_ONLY:
        raise ValueError(
            f"method {name!r} cannot be called on one copy of a batched vector env; call the vector env's {name}()"
        )


class _Engine:
    """What both engines share: the copies' RNGs, their count, the last round's timing."""

    runner: RoundRunner
    copies: Sequence[EnvCopy]
    _rngs: list[np.random.Generator | None]

    @staticmethod
    def _config(
        config: PeerSelectionConfig | dict[str, Any] | None,
        n_envs: int,
        render_mode: str | None,
        overrides: dict[str, Any],
    ) -> PeerSelectionConfig:
        """The copies' config, after the count and the render mode are checked."""
        if isinstance(n_envs, bool) or not isinstance(n_envs, int | np.integer) or n_envs < 1:
            raise ValueError(f"n_envs={n_envs!r} is not accepted; accepted: an integer >= 1")
        check_render_mode(render_mode)
        return make_config(config, **overrides)

    @property
    def n_envs(self) -> int:
        """Number of copies."""
        return len(self.copies)

    @property
    def last_timing(self) -> dict[str, float]:
        """[s] train / evaluate / observe time of the last batched round (all copies together)."""
        return self.runner.last_timing

    def _seeded(self, indices: Sequence[int], seeds: Sequence[int | None]) -> list[np.random.Generator]:
        """The RNGs of the copies ``indices``: a seed starts one afresh; None continues it (a
        random one the first time), as ``gymnasium.Env.reset`` does."""
        rngs = []
        for i, seed in zip(indices, seeds, strict=True):
            rng = self._rngs[i]
            if seed is not None or rng is None:
                rng, _ = seeding.np_random(seed)
                self._rngs[i] = rng
            rngs.append(rng)
        return rngs

    def reset(
        self, indices: Sequence[int], seeds: Sequence[int | None], options: Sequence[dict[str, Any] | None]
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        raise NotImplementedError

    def autoreset(self, indices: Sequence[int]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Start the next episode in the copies ``indices``, continuing their RNGs (what the
        vector envs do when a copy's episode ends)."""
        return self.reset(indices, [None] * len(indices), [None] * len(indices))


class BatchedPeerSelection(_Engine):
    """The engine: ``n_envs`` episodes and their stacked models.

    Args:
        config: The copies' configuration: a :class:`~hlgym.envs.PeerSelectionConfig`, a
            dict of its fields, or None for the embedded default.
        n_envs: Number of copies.
        render_mode: As :class:`~hlgym.envs.PeerSelectionEnv`'s.
        **overrides: Replace fields of ``config``.
    """

    def __init__(
        self,
        config: PeerSelectionConfig | dict[str, Any] | None = None,
        n_envs: int = 8,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        self.config = cfg = self._config(config, n_envs, render_mode, overrides)
        if cfg.tasks is not None:
            raise ValueError(
                "tasks is not accepted by BatchedPeerSelection (one task); accepted: tasks=None, or "
                "BatchedTaskDistribution (hlgym.agents.sb3.BatchedPeerSelectionVecEnv picks it)"
            )
        self.render_mode = render_mode
        data = Episode.load_data(cfg)  # every copy reads the same device tensors
        models = StackedModels.from_spec(model_spec(cfg, data), int(n_envs) * components.slots(cfg))
        self.runner = RoundRunner([Episode(cfg, models.n_params, data) for _ in range(int(n_envs))], models)
        self.observation_space, self.action_space = spaces_for(cfg)
        self._rngs: list[np.random.Generator | None] = [None] * int(n_envs)
        self.copies = [EnvCopy(self, i) for i in range(int(n_envs))]

    def reset(
        self, indices: Sequence[int], seeds: Sequence[int | None], options: Sequence[dict[str, Any] | None]
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Start new episodes in the copies ``indices``; returns their ``(obs, info)``.

        A seed starts the copy's RNG afresh; None continues it (a random one the first time),
        as ``gymnasium.Env.reset`` does.
        """
        return self.runner.reset(indices, self._seeded(indices, seeds), options)

    def step(self, indices: Sequence[int], actions: Sequence[Any]) -> list[StepResult]:
        """One round in each of the copies ``indices``; every action is checked before any copy moves."""
        return self.runner.step(indices, actions)


class EnvCopy(EpisodeView):
    """One copy of a batched env, as ``get_attr`` / ``env_method`` / ``call`` reach it.

    It shows its episode as every env face does (:class:`~hlgym.envs.face.EpisodeView`),
    reads the rest of its state (``holder``, ``visits``...: every public attribute of
    :class:`~hlgym.envs.episode.Episode`) and offers the env's read-only methods. It cannot
    step or reset: the vector env does that for all copies.
    """

    def __init__(self, engine: BatchedPeerSelection, index: int) -> None:
        self._engine = engine
        self.index = index

    @property
    def episode(self) -> Episode:
        """This copy's episode."""
        return self._engine.runner.episodes[self.index]

    def viewed(self) -> Episode | None:
        """This copy's episode (what :class:`~hlgym.envs.face.EpisodeView` shows)."""
        return self.episode

    @property
    def render_mode(self) -> str | None:
        """The vector env's render mode."""
        return self._engine.render_mode

    def action_masks(self) -> np.ndarray:
        """Peers that can receive the model this round (MaskablePPO reads it)."""
        return self.episode.action_masks()

    def render(self) -> str | np.ndarray | None:
        """This copy's render (see :meth:`hlgym.envs.PeerSelectionEnv.render`)."""
        return self.episode.render(self.render_mode)

    def full_test_accuracy(self) -> float:
        """This copy's model's accuracy on the whole test set."""
        return self._engine.runner.full_test_accuracy(self.index)

    @property
    def model(self) -> nn.Module:
        """A module holding this copy's current weights (a copy: the engine trains the stacked ones)."""
        return self._engine.runner.module(self.index)

    def peer_model(self, peer: int) -> nn.Module:
        """A module holding peer ``peer``'s own model (see :meth:`hlgym.envs.PeerSelectionEnv.peer_model`)."""
        return self._engine.runner.module(self.index, peer)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # also keeps copy/pickle protocol look-ups off the episode
            raise AttributeError(name)
        if name in ENGINE_ONLY:
            raise AttributeError(f"one copy of a batched vector env has no {name}(); call the vector env's {name}()")
        return getattr(self.episode, name)


class BatchedTaskDistribution(_Engine):
    """The engine for a task distribution: ``n_envs`` copies, each drawing its own task at
    every reset as :class:`~hlgym.envs.TaskDistributionEnv` does (the same draws from the
    same seed), whose models live in one :class:`~hlgym.models.batched.StackedModels`.

    The tasks' networks are one shape whatever their peer count (the digits MLP), so a copy
    only swaps its :class:`~hlgym.envs.episode.Episode` (one per copy and task, built at its
    first draw and kept) at a reset; optimizer states are kept for ``max_peers`` peers (a task
    uses its own peers' ones). Observations, actions, masks and infos are the task
    distribution's: ``max_peers`` rows with the ``present`` column, a padding row's action
    keeps the model where it is. Same interface as :class:`BatchedPeerSelection`.

    Raises:
        ValueError: If the config has no ``tasks``, or its tasks' networks or model slots
            differ (a per-peer transfer mode, another model in one family).
    """

    def __init__(
        self,
        config: PeerSelectionConfig | dict[str, Any] | None = None,
        n_envs: int = 8,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        self.config = cfg = self._config(config, n_envs, render_mode, overrides)
        if cfg.tasks is None:
            raise ValueError("tasks=None is not accepted by the task distribution's engine; accepted: a task spec")
        self.render_mode = render_mode
        self.spec_tasks = cfg.tasks
        self.families = cfg.tasks.families()
        tasks = [cfg.replace(tasks=None, **t) for family in self.families for t in family.tasks()]
        specs = [model_spec(t, Episode.load_data(t)) for t in tasks]
        plain = {dataclasses.replace(spec, n_optimizers=1) for spec in specs}
        slots = {components.slots(t) for t in tasks}
        if len(plain) > 1 or slots != {1}:
            raise ValueError(
                "tasks whose networks or model slots differ are not accepted by the batched engine (a family with "
                "another model, width or optimizer, or a per-peer transfer mode); accepted: tasks of one network "
                "and the relay, or TaskDistributionEnv copies in a plain vector env"
            )
        spec = dataclasses.replace(specs[0], n_optimizers=max(s.n_optimizers for s in specs))
        models = StackedModels.from_spec(spec, int(n_envs))
        self._n_params = models.n_params
        first = tasks[0]
        self.runner = RoundRunner([Episode(first, models.n_params) for _ in range(int(n_envs))], models)
        self._built: list[dict[str, Episode]] = [{} for _ in range(int(n_envs))]
        self.tasks: list[dict[str, Any]] = [{} for _ in range(int(n_envs))]
        """Each copy's current task: ``family`` and the drawn fields (empty before its first reset)."""
        n, columns = self.spec_tasks.max_peers, len(observation.columns(first)) + 1
        self.observation_space = spaces.Box(0.0, 1.0, (n, columns), np.float32)
        self.action_space = spaces.Discrete(n)
        self._rngs: list[np.random.Generator | None] = [None] * int(n_envs)
        self.copies = [TaskCopy(self, i) for i in range(int(n_envs))]

    def reset(
        self, indices: Sequence[int], seeds: Sequence[int | None], options: Sequence[dict[str, Any] | None]
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Draw a task in each copy of ``indices`` and start its episode; returns their
        ``(obs, info)``. A seed starts the copy's RNG afresh; None continues it."""
        task_rngs = []
        for i, rng in zip(indices, self._seeded(indices, seeds), strict=True):
            family, fields, key, task_seed = draw_task(self.spec_tasks, self.families, rng)
            if key not in self._built[i]:
                try:
                    self._built[i][key] = Episode(self.config.replace(tasks=None, **fields), self._n_params)
                except ValueError as exc:
                    raise ValueError(f"tasks family {family.name!r}, task {fields}: {exc}") from exc
            self.runner.episodes[i] = self._built[i][key]
            self.tasks[i] = {"family": family.name, **fields}
            task_rngs.append(seeding.np_random(task_seed)[0])
        results = self.runner.reset(indices, task_rngs, options)
        m = self.spec_tasks.max_peers
        return [(pad_rows(obs, m), self._info(i, info)) for i, (obs, info) in zip(indices, results, strict=True)]

    def step(self, indices: Sequence[int], actions: Sequence[Any]) -> list[StepResult]:
        """One round in each copy of ``indices`` (every action is checked before any copy moves)."""
        if len(indices) != len(actions):
            raise ValueError(f"{len(actions)} actions for {len(indices)} episodes; accepted: one action per episode")
        peers, absent = [], []
        for i, action in zip(indices, actions, strict=True):
            episode = self.runner.episodes[i]
            if not self.tasks[i]:
                raise ResetNeededError("call reset() first: no task has been drawn yet")
            peer, padding = task_action(action, self.spec_tasks.max_peers, episode.config.n_peers, episode.route[-1])
            peers.append(peer)
            absent.append(padding)
        results = self.runner.step(indices, peers)
        m = self.spec_tasks.max_peers
        return [
            (pad_rows(obs, m), reward, terminated, truncated, self._info(i, info, padding))
            for i, padding, (obs, reward, terminated, truncated, info) in zip(indices, absent, results, strict=True)
        ]

    def _info(self, index: int, info: dict[str, Any], absent: bool = False) -> dict[str, Any]:
        episode = self.runner.episodes[index]
        mask = pad_mask(episode.action_masks(), self.spec_tasks.max_peers)
        return task_info(info, mask, self.tasks[index], episode.config, absent)


class TaskCopy(EnvCopy):
    """One copy of the batched task distribution (see :class:`EnvCopy`): its current task's
    episode, its action mask padded to ``max_peers``, and ``task`` / ``n_peers``."""

    def __init__(self, engine: BatchedTaskDistribution, index: int) -> None:
        super().__init__(engine, index)  # type: ignore[arg-type]
        self._tasks_engine = engine

    @property
    def task(self) -> dict[str, Any]:
        """The current task: ``family`` and the drawn fields."""
        return dict(self._tasks_engine.tasks[self.index])

    @property
    def n_peers(self) -> int:
        """Peers of the current task."""
        return int(self.episode.config.n_peers)

    def action_masks(self) -> np.ndarray:
        """The task's online peers, padded with False to ``max_peers``."""
        return pad_mask(self.episode.action_masks(), self._tasks_engine.spec_tasks.max_peers)


class BatchedPeerSelectionVectorEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """Gymnasium ``VectorEnv`` of ``num_envs`` env copies whose inner models train and
    evaluate in batched calls: what ``gymnasium.make_vec`` builds for the registered ids.

    Args:
        num_envs: Number of copies.
        config: The copies' configuration (a config, a dict of its fields, or None for the
            embedded default).
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
        autoreset_mode: Gymnasium's autoreset mode (``NEXT_STEP`` as ``SyncVectorEnv`` by
            default; ``SAME_STEP`` puts ``final_obs`` / ``final_info`` in the infos).
        max_episode_steps: What ``gymnasium.make_vec`` passes: the id's registered episode
            length unless given. The copies end their episodes at ``max_rounds`` themselves
            (with ``max_rounds=50`` at 50 steps); a limit given shorter than that is refused.
        **overrides: Replace fields of ``config``.

    >>> import gymnasium as gym, hlgym
    >>> envs = gym.make_vec("hlgym/PeerSelection-v0", num_envs=3)
    >>> obs, infos = envs.reset(seed=0)
    >>> obs.shape, infos["round"]
    ((3, 10, 8), array([0, 0, 0]))
    """

    def __init__(
        self,
        num_envs: int = 8,
        config: PeerSelectionConfig | dict[str, Any] | None = None,
        render_mode: str | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        max_episode_steps: int | None = None,
        **overrides: Any,
    ) -> None:
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError as exc:
            accepted = ", ".join(repr(m.value) for m in AutoresetMode)
            raise ValueError(f"autoreset_mode={autoreset_mode!r} is not accepted; accepted: {accepted}") from exc
        self.engine = BatchedPeerSelection(config, num_envs, render_mode, **overrides)
        steps = self.engine.config.max_episode_steps()
        # gymnasium.make_vec passes the id's registered limit when it is given none: the
        # copies end their episodes at max_rounds (no TimeLimit), so that one is the
        # preset's length, and a limit given shorter than max_rounds cannot hold.
        registered = PeerSelectionConfig.from_dict(config).max_episode_steps() if isinstance(config, dict) else None
        if max_episode_steps is not None and max_episode_steps != registered and max_episode_steps < steps:
            raise ValueError(
                f"max_episode_steps={max_episode_steps} is not accepted: this config's episodes take up to {steps} "
                f"steps and the batched copies end them at max_rounds; accepted: None or >= {steps} "
                "(pass max_episode_steps with a longer max_rounds, or shorten max_rounds itself)"
            )
        self.num_envs = self.engine.n_envs
        self.single_observation_space = self.engine.observation_space
        self.single_action_space = self.engine.action_space
        shape = self.single_observation_space.shape
        assert shape is not None, "PeerSelectionEnv's observations are Boxes"
        self._obs_shape = (self.num_envs, *shape)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = render_mode
        self.metadata = {"render_modes": list(RENDER_MODES), "render_fps": 2, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    @property
    def envs(self) -> Sequence[EnvCopy]:
        """The copies (read-only handles; see :class:`EnvCopy`)."""
        return self.engine.copies

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the copies: ``seed`` an int (copy ``i`` gets ``seed + i``) or one per copy;
        ``options={"reset_mask": mask}`` resets only the masked copies."""
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, int | np.integer):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed has {len(seeds)} entries; accepted: an int, None or {n} seeds (one per env)")
        opts = dict(options or {})
        mask = np.asarray(opts.pop("reset_mask", np.ones(n, dtype=bool)))
        if mask.shape != (n,) or mask.dtype != np.bool_:
            raise ValueError(
                f"options['reset_mask'] has shape {mask.shape} and dtype {mask.dtype}; accepted: ({n},) bool"
            )
        indices = [int(i) for i in np.flatnonzero(mask)]
        results = self.engine.reset(indices, [seeds[i] for i in indices], [opts or None] * len(indices))
        obs = np.zeros(self._obs_shape, dtype=np.float32)
        infos: dict[str, Any] = {}
        for i, (o, info) in zip(indices, results, strict=True):
            obs[i] = o
            infos = self._add_info(infos, info, i)
        self._autoreset[indices] = False
        return obs, infos

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step the copies; finished ones reset as ``autoreset_mode`` says."""
        n = self.num_envs
        actions = np.asarray(actions).reshape(n)
        if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset.any():
            raise RuntimeError(
                f"envs {np.flatnonzero(self._autoreset).tolist()} ended; with autoreset_mode=DISABLED reset them "
                "with reset(options={'reset_mask': ...}) before stepping"
            )
        restart = (
            [int(i) for i in np.flatnonzero(self._autoreset)] if self.autoreset_mode == AutoresetMode.NEXT_STEP else []
        )
        stepping = [i for i in range(n) if i not in restart]
        obs = np.zeros(self._obs_shape, dtype=np.float32)
        rewards = np.zeros(n, dtype=np.float64)
        terminations = np.zeros(n, dtype=bool)
        truncations = np.zeros(n, dtype=bool)
        infos: dict[str, Any] = {}
        # The copies are independent: stepping first means a bad action raises before any
        # copy moved or reset; NEXT_STEP's restarting copies ignore their action.
        results = self.engine.step(stepping, list(actions[stepping]))
        finished = []
        for i, (o, r, te, tr, info) in zip(stepping, results, strict=True):
            obs[i], rewards[i], terminations[i], truncations[i] = o, r, te, tr
            if (te or tr) and self.autoreset_mode == AutoresetMode.SAME_STEP:
                infos = self._add_info(infos, {"final_obs": o, "final_info": info}, i)
                finished.append(i)
            else:
                infos = self._add_info(infos, info, i)
        for i, (o, info) in zip(restart + finished, self.engine.autoreset(restart + finished), strict=True):
            obs[i] = o
            infos = self._add_info(infos, info, i)
        self._autoreset = terminations | truncations
        return obs, rewards, terminations, truncations, infos

    def render(self) -> tuple[Any, ...] | None:
        """Each copy's render, as ``SyncVectorEnv`` returns them."""
        if self.render_mode is None:
            return None
        return tuple(copy.render() for copy in self.envs)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call a read-only method (or read an attribute) of every copy."""
        check_copy_method(name)
        out = []
        for copy in self.envs:
            attr = getattr(copy, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """An attribute of every copy."""
        return tuple(getattr(copy, name) for copy in self.envs)

    def set_attr(self, name: str, values: Any) -> None:
        """Set an attribute of every copy's handle: one value for all, or a list or tuple of one per copy."""
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"values has {len(values)} entries; accepted: one value or {self.num_envs}")
        for copy, value in zip(self.envs, values, strict=True):
            setattr(copy, name, value)
