"""Vector envs that step many :class:`PeerSelectionEnv` copies with batched inner-model work.

Every copy is a real :class:`~hlgym.envs.PeerSelectionEnv`: its seed, data split, probes,
topology, route, rewards, masks and render are its own, drawn and kept exactly as a lone
env does. Only the model work moves: the travelling models of all copies live stacked in a
:class:`~hlgym.models.batched.StackedModels`, so one call trains every copy that received
its model this round, one call evaluates them all on the shared test images, and one call
runs the probes. Each copy draws its initial weights and batch order from its own
generator, so the trajectories are those of independent envs up to float rounding
(tests/test_batched.py checks it).

Two front ends share the engine:

- :class:`BatchedPeerSelectionVecEnv`: a Stable-Baselines3 ``VecEnv`` (auto-reset in the
  same step, ``terminal_observation`` and ``TimeLimit.truncated`` in the infos).
- :class:`BatchedPeerSelectionVectorEnv`: a Gymnasium ``VectorEnv``, the ``vector_entry_point``
  of the registered ids, so ``gymnasium.make_vec(id, num_envs)`` builds it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from hlgym.envs.config import PeerSelectionConfig
from hlgym.envs.peer_selection import PeerSelectionEnv
from hlgym.models.batched import StackedModels
from hlgym.models.training import build_model

StepResult = tuple[np.ndarray, float, bool, bool, dict[str, Any]]
# Methods that would step a copy's own (stale) model behind the engine's back.
_ENGINE_ONLY = frozenset({"step", "reset"})


class BatchedPeerSelection:
    """The engine: ``n_envs`` env copies and their stacked models.

    Args:
        config: The copies' configuration (default: the embedded default).
        n_envs: Number of copies.
        render_mode: As :class:`PeerSelectionEnv`'s.
        **overrides: Replace fields of ``config``.
    """

    def __init__(
        self,
        config: PeerSelectionConfig | None = None,
        n_envs: int = 8,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(n_envs, bool) or not isinstance(n_envs, int | np.integer) or n_envs < 1:
            raise ValueError(f"n_envs={n_envs!r} is not accepted; accepted: an integer >= 1")
        first = PeerSelectionEnv(config, render_mode, **overrides)
        self.config = cfg = first.config
        # Every copy reads the same device tensors (cached per process by the env).
        self.envs = [first] + [PeerSelectionEnv(cfg, render_mode) for _ in range(int(n_envs) - 1)]
        template = build_model(
            cfg.model,
            first._data.input_shape,
            first._data.n_classes,
            torch.Generator().manual_seed(0),
            cfg.hidden_units,
        )
        template.to(first._device, memory_format=first._memory_format)  # type: ignore[call-overload]
        self.models = StackedModels(
            template,
            len(self.envs),
            cfg.n_peers if cfg.per_peer_optimizer else 1,
            cfg.optimizer,
            cfg.lr,
            cfg.adam_eps,
            channels_last=cfg.model == "cnn",
        )
        self._stale: set[int] = set()  # copies whose own nn.Module lags the stacked weights
        self.last_timing: dict[str, float] = {}

    def reset(
        self, indices: Sequence[int], seeds: Sequence[int | None], options: Sequence[dict[str, Any] | None]
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Start new episodes in the copies ``indices``; returns their ``(obs, info)``."""
        if len(indices) == 0:
            return []
        for i, seed, opts in zip(indices, seeds, options, strict=True):
            env = self.envs[i]
            env._begin_episode(seed, opts)
            self.models.load(i, env._model)
            self._stale.discard(i)
        for i, accuracy in zip(indices, self._accuracies(indices), strict=True):
            self.envs[i]._start_episode(accuracy)
        cfg = self.config
        if cfg.first_round_at_start:
            results = self.step(indices, [cfg.start_peer] * len(indices))
            return [self.envs[i]._forced_first_round(r) for i, r in zip(indices, results, strict=True)]
        probes = self._probes(indices)
        return [self.envs[i]._opening(p) for i, p in zip(indices, probes, strict=True)]

    def step(self, indices: Sequence[int], actions: Iterable[Any]) -> list[StepResult]:
        """One round in each of the copies ``indices``; returns their step tuples."""
        actions = list(actions)
        if len(indices) == 0:
            return []
        for i, action in zip(indices, actions, strict=True):
            # Check every action before any copy moves, so a bad one leaves all copies as they were.
            self.envs[i]._check_step(action)
        moves = [self.envs[i]._dispatch(a) for i, a in zip(indices, actions, strict=True)]
        t0 = time.perf_counter()
        self._train(indices, [m.peer if m.delivered else None for m in moves])
        t1 = time.perf_counter()
        accuracies = self._accuracies(indices)
        t2 = time.perf_counter()
        probes = self._probes(indices)
        results = [
            self.envs[i]._conclude(move, accuracy, probe)
            for i, move, accuracy, probe in zip(indices, moves, accuracies, probes, strict=True)
        ]
        # [s] wall time of the batched phases of the last call, read by bench/bench_env.py
        self.last_timing = {"train": t1 - t0, "evaluate": t2 - t1, "observe": time.perf_counter() - t2}
        return [(o, float(r), te, tr, info) for o, r, te, tr, info in results]

    def sync(self, indices: Iterable[int]) -> None:
        """Copy the stacked weights into the copies' own models (for their read-only methods)."""
        for i in indices:
            if i in self._stale:
                self.models.store(i, self.envs[i]._model)
                self._stale.discard(i)

    # ------------------------------------------------------------------ batched model work

    def _train(self, indices: Sequence[int], peers: Sequence[int | None]) -> None:
        cfg = self.config
        groups: dict[int, list[tuple[int, int]]] = {}
        for i, peer in zip(indices, peers, strict=True):
            if peer is None:
                self.envs[i]._trained(None, None, None)
            else:
                # Copies train together when their peers hold as many samples (the same batches).
                groups.setdefault(len(self.envs[i]._peer_y[peer]), []).append((i, peer))
        for members in groups.values():
            slots = [i for i, _ in members]
            envs = [self.envs[i] for i in slots]
            before = [self.models.flat(i) for i in slots] if cfg.observation == "hl_pca" else None
            self.models.train(
                slots,
                [env._optimizer_index(p) for env, (_, p) in zip(envs, members, strict=True)],
                torch.stack([env._peer_x[p] for env, (_, p) in zip(envs, members, strict=True)]),
                torch.stack([env._peer_y[p] for env, (_, p) in zip(envs, members, strict=True)]),
                cfg.local_epochs,
                cfg.batch_size,
                [env._gen for env in envs],
            )
            for j, (env, (i, peer)) in enumerate(zip(envs, members, strict=True)):
                after = self.models.flat(i) if before is not None else None
                env._trained(peer, before[j] if before is not None else None, after)
                self._stale.add(i)

    def _accuracies(self, indices: Sequence[int]) -> list[float]:
        env = self.envs[0]
        _, hits = self.models.per_sample_loss(indices, env._x_test, env._y_test, shared=True)
        return [float(h) for h in hits.mean(dim=1)]

    def _probes(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray] | None]:
        if self.config.observation != "peer_features":
            return [None] * len(indices)
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        groups: dict[int, list[int]] = {}
        for i in indices:
            groups.setdefault(len(self.envs[i]._probe_y), []).append(i)
        for slots in groups.values():
            envs = [self.envs[i] for i in slots]
            x = torch.stack([env._probe_x for env in envs])
            y = torch.stack([env._probe_y for env in envs])
            loss, hits = self.models.per_sample_loss(slots, x, y, shared=False)
            for j, (i, env) in enumerate(zip(slots, envs, strict=True)):
                out[i] = env._per_peer_means(loss[j], hits[j])
        return [out[i] for i in indices]


def _check_method(name: str) -> None:
    if name in _ENGINE_ONLY:
        raise ValueError(
            f"method {name!r} cannot be called on one copy of a batched vector env; call the vector env's {name}()"
        )


class BatchedPeerSelectionVecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` of ``n_envs`` :class:`PeerSelectionEnv` copies whose inner
    models train and evaluate in batched calls.

    It behaves as ``DummyVecEnv([lambda: PeerSelectionEnv(config)] * n_envs)``: the same seeds
    (``seed(s)`` gives copy ``i`` the seed ``s + i``) give the same trajectories up to float
    rounding; a finished copy resets in the same step, with the last observation in
    ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]`` set as SB3 expects.
    ``env_method`` and ``get_attr`` reach the copies (``env_method("action_masks")`` serves
    MaskablePPO); wrap it in ``VecMonitor`` for episode statistics.

    Args:
        config: The copies' configuration (default: the embedded default).
        n_envs: Number of copies.
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
        **overrides: Replace fields of ``config``.

    >>> from hlgym.envs import BatchedPeerSelectionVecEnv, PRESETS
    >>> venv = BatchedPeerSelectionVecEnv(PRESETS["hlgym/PeerSelection-v0"], n_envs=4)
    >>> venv.seed(0)
    [0, 1, 2, 3]
    >>> venv.reset().shape
    (4, 10, 8)
    """

    def __init__(
        self,
        config: PeerSelectionConfig | None = None,
        n_envs: int = 8,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        self.engine = BatchedPeerSelection(config, n_envs, render_mode, **overrides)
        first = self.engine.envs[0]
        self._actions: list[Any] = []
        self.num_envs = len(self.engine.envs)  # VecEnv.__init__ reads render_mode through get_attr
        super().__init__(len(self.engine.envs), first.observation_space, first.action_space)

    @property
    def envs(self) -> list[PeerSelectionEnv]:
        """The copies (their own ``_model`` is synced on ``get_attr`` / ``env_method``)."""
        return self.engine.envs

    @property
    def last_timing(self) -> dict[str, float]:
        """[s] train / evaluate / observe time of the last ``step_wait`` (all copies together)."""
        return self.engine.last_timing

    def reset(self) -> VecEnvObs:
        """Reset every copy with the seeds and options set by ``seed()`` / ``set_options()``."""
        n = self.num_envs
        results = self.engine.reset(range(n), self._seeds, [opt or None for opt in self._options])
        self.reset_infos = [info for _, info in results]
        self._reset_seeds()
        self._reset_options()
        return np.stack([obs for obs, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions for :meth:`step_wait`."""
        self._actions = list(np.asarray(actions).reshape(self.num_envs))

    def step_wait(self) -> VecEnvStepReturn:
        """Step every copy; finished copies reset at once (SB3's auto-reset)."""
        results = self.engine.step(range(self.num_envs), self._actions)
        obs = [r[0] for r in results]
        infos = [r[4] for r in results]
        done = []
        for i, (o, _, terminated, truncated, info) in enumerate(results):
            info["TimeLimit.truncated"] = truncated and not terminated
            if terminated or truncated:
                info["terminal_observation"] = o
                done.append(i)
        if done:
            for i, (o, info) in zip(done, self.engine.reset(done, [None] * len(done), [None] * len(done)), strict=True):
                obs[i] = o
                self.reset_infos[i] = info
        rewards = np.array([r[1] for r in results], dtype=np.float32)
        dones = np.array([r[2] or r[3] for r in results], dtype=bool)
        return np.stack(obs), rewards, dones, infos

    def close(self) -> None:
        """Close every copy."""
        for env in self.envs:
            env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of each copy in ``indices``."""
        target = self._get_indices(indices)
        self.engine.sync(target)
        return [getattr(self.envs[i], attr_name) for i in target]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of each copy in ``indices``."""
        for i in self._get_indices(indices):
            setattr(self.envs[i], attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a read-only method of each copy in ``indices`` (not ``step`` / ``reset``)."""
        _check_method(method_name)
        target = self._get_indices(indices)
        self.engine.sync(target)
        return [getattr(self.envs[i], method_name)(*method_args, **method_kwargs) for i in target]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """The copies are bare envs: never wrapped."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each copy's ``rgb_array`` render."""
        if self.render_mode != "rgb_array":
            raise ValueError(f"get_images() needs render_mode='rgb_array', got render_mode={self.render_mode!r}")
        return [env.render() for env in self.envs]  # type: ignore[misc]


class BatchedPeerSelectionVectorEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """Gymnasium ``VectorEnv`` over the same engine: what ``gymnasium.make_vec`` builds for the
    registered ids.

    Args:
        num_envs: Number of copies.
        config: The copies' configuration (default: the embedded default).
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
        autoreset_mode: Gymnasium's autoreset mode (``NEXT_STEP`` as ``SyncVectorEnv`` by
            default; ``SAME_STEP`` puts ``final_obs`` / ``final_info`` in the infos).
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
        config: PeerSelectionConfig | None = None,
        render_mode: str | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        **overrides: Any,
    ) -> None:
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError as exc:
            accepted = ", ".join(repr(m.value) for m in AutoresetMode)
            raise ValueError(f"autoreset_mode={autoreset_mode!r} is not accepted; accepted: {accepted}") from exc
        self.engine = BatchedPeerSelection(config, num_envs, render_mode, **overrides)
        first = self.engine.envs[0]
        self.num_envs = len(self.engine.envs)
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        shape = first.observation_space.shape
        assert shape is not None, "PeerSelectionEnv's observations are Boxes"
        self._obs_shape = (self.num_envs, *shape)
        self.observation_space = batch_space(first.observation_space, self.num_envs)
        self.action_space = batch_space(first.action_space, self.num_envs)
        self.render_mode = render_mode
        self.metadata = {**PeerSelectionEnv.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    @property
    def envs(self) -> list[PeerSelectionEnv]:
        """The copies."""
        return self.engine.envs

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
        obs = np.zeros(self._obs_shape, dtype=np.float32)
        rewards = np.zeros(n, dtype=np.float64)
        terminations = np.zeros(n, dtype=bool)
        truncations = np.zeros(n, dtype=bool)
        infos: dict[str, Any] = {}
        restart = [i for i in range(n) if self._autoreset[i]] if self.autoreset_mode == AutoresetMode.NEXT_STEP else []
        if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset.any():
            raise RuntimeError(
                f"envs {np.flatnonzero(self._autoreset).tolist()} ended; with autoreset_mode=DISABLED reset them "
                "with reset(options={'reset_mask': ...}) before stepping"
            )
        stepping = [i for i in range(n) if i not in restart]
        for i in stepping:
            self.envs[i]._check_action(actions[i])  # before any copy resets or moves
        for i, (o, info) in zip(
            restart, self.engine.reset(restart, [None] * len(restart), [None] * len(restart)), strict=True
        ):
            obs[i] = o
            infos = self._add_info(infos, info, i)
        results = self.engine.step(stepping, actions[stepping])
        finished = []
        for i, (o, r, te, tr, info) in zip(stepping, results, strict=True):
            obs[i], rewards[i], terminations[i], truncations[i] = o, r, te, tr
            if (te or tr) and self.autoreset_mode == AutoresetMode.SAME_STEP:
                infos = self._add_info(infos, {"final_obs": o, "final_info": info}, i)
                finished.append(i)
            else:
                infos = self._add_info(infos, info, i)
        for i, (o, info) in zip(
            finished, self.engine.reset(finished, [None] * len(finished), [None] * len(finished)), strict=True
        ):
            obs[i] = o
            infos = self._add_info(infos, info, i)
        self._autoreset = terminations | truncations
        return obs, rewards, terminations, truncations, infos

    def render(self) -> tuple[Any, ...] | None:
        """Each copy's render, as ``SyncVectorEnv`` returns them."""
        if self.render_mode is None:
            return None
        return tuple(env.render() for env in self.envs)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call a read-only method (or read an attribute) of every copy."""
        _check_method(name)
        self.engine.sync(range(self.num_envs))
        out = []
        for env in self.envs:
            attr = getattr(env, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """An attribute of every copy."""
        self.engine.sync(range(self.num_envs))
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values: Any) -> None:
        """Set an attribute of every copy: one value for all, or a list or tuple of one per copy."""
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"values has {len(values)} entries; accepted: one value or {self.num_envs}")
        for env, value in zip(self.envs, values, strict=True):
            setattr(env, name, value)
