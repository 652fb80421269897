"""Stable-Baselines3 (and sb3-contrib): the batched VecEnv, algorithm factory, callbacks,
checkpoints, and trained models as agents.

Training writes its files through :class:`hlgym.runs.RunFolder` (``hlgym.train`` drives it);
TensorBoard gets ``hl/rounds``, ``hl/comm_cost``, ``hl/final_accuracy`` and the rest of
:data:`TENSORBOARD_KEYS`.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from hlgym.agents.attention import PeerAttentionPolicy, best_online_peer
from hlgym.envs import PeerSelectionConfig, registration
from hlgym.envs.config import make_config
from hlgym.envs.vector import BatchedPeerSelection, BatchedTaskDistribution, EnvCopy, check_copy_method
from hlgym.records import EpisodeOutcome
from hlgym.runs import EpisodeLog, RunFolder

# name -> (module, class, the policy "mlp" maps to)
ALGORITHMS: dict[str, tuple[str, str, str]] = {
    "dqn": ("stable_baselines3", "DQN", "MlpPolicy"),
    "ppo": ("stable_baselines3", "PPO", "MlpPolicy"),
    "a2c": ("stable_baselines3", "A2C", "MlpPolicy"),
    "maskable_ppo": ("sb3_contrib", "MaskablePPO", "MlpPolicy"),
    "recurrent_ppo": ("sb3_contrib", "RecurrentPPO", "MlpLstmPolicy"),
}
ATTENTION_ALGOS = ("ppo", "a2c")
POLICIES = ("mlp", "attention")
# Training-log columns also logged to TensorBoard (as hl/<key>).
TENSORBOARD_KEYS = ("rounds", "comm_cost", "bytes_sent", "final_accuracy", "reached_goal", "return")


class BatchedPeerSelectionVecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` of ``n_envs`` :class:`~hlgym.envs.PeerSelectionEnv` copies
    whose inner models train and evaluate in batched calls (:mod:`hlgym.envs.vector`).

    It behaves as ``DummyVecEnv([lambda: PeerSelectionEnv(config)] * n_envs)`` (with ``tasks``
    in the config, as ``TaskDistributionEnv`` copies: each draws its own tasks,
    :class:`~hlgym.envs.vector.BatchedTaskDistribution`): the same seeds
    (``seed(s)`` gives copy ``i`` the seed ``s + i``) give the same trajectories up to float
    rounding; a finished copy resets in the same step, with the last observation in
    ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]`` set as SB3 expects.
    ``env_method`` and ``get_attr`` reach the copies' read-only handles
    (:class:`~hlgym.envs.vector.EnvCopy`; ``env_method("action_masks")`` serves MaskablePPO);
    wrap it in ``VecMonitor`` for episode statistics.

    Args:
        config: The copies' configuration (a config, a dict of its fields, or None for the
            embedded default).
        n_envs: Number of copies.
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
        **overrides: Replace fields of ``config``.

    >>> from hlgym.agents.sb3 import BatchedPeerSelectionVecEnv
    >>> venv = BatchedPeerSelectionVecEnv(n_envs=4)
    >>> venv.seed(0)
    [0, 1, 2, 3]
    >>> venv.reset().shape
    (4, 10, 8)
    """

    def __init__(
        self,
        config: PeerSelectionConfig | dict[str, Any] | None = None,
        n_envs: int = 8,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        cfg = make_config(config, **overrides)
        # A task distribution's copies draw their own tasks (BatchedTaskDistribution); one task's share the config.
        engine = BatchedTaskDistribution if cfg.tasks is not None else BatchedPeerSelection
        self.engine: BatchedPeerSelection | BatchedTaskDistribution = engine(cfg, n_envs, render_mode)
        self._actions: list[Any] = []
        super().__init__(self.engine.n_envs, self.engine.observation_space, self.engine.action_space)

    @property
    def envs(self) -> Sequence[EnvCopy]:
        """The copies (read-only handles)."""
        return self.engine.copies

    @property
    def last_timing(self) -> dict[str, float]:
        """[s] train / evaluate / observe time of the last ``step_wait`` (all copies together)."""
        return self.engine.last_timing

    def reset(self) -> VecEnvObs:
        """Reset every copy with the seeds and options set by ``seed()`` / ``set_options()``."""
        results = self.engine.reset(range(self.num_envs), self._seeds, [opt or None for opt in self._options])
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
        for i, (o, info) in zip(done, self.engine.autoreset(done), strict=True):
            obs[i] = o
            self.reset_infos[i] = info
        rewards = np.array([r[1] for r in results], dtype=np.float32)
        dones = np.array([r[2] or r[3] for r in results], dtype=bool)
        return np.stack(obs), rewards, dones, infos

    def close(self) -> None:
        """Nothing to release: the copies hold no processes or files."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of each copy in ``indices``."""
        return [getattr(self.envs[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of each copy's handle in ``indices``."""
        for i in self._get_indices(indices):
            setattr(self.envs[i], attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a read-only method of each copy in ``indices`` (not ``step`` / ``reset``)."""
        check_copy_method(method_name)
        return [getattr(self.envs[i], method_name)(*method_args, **method_kwargs) for i in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """The copies are bare envs: never wrapped."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each copy's ``rgb_array`` render."""
        if self.render_mode != "rgb_array":
            raise ValueError(f"get_images() needs render_mode='rgb_array', got render_mode={self.render_mode!r}")
        return [copy.render() for copy in self.envs]  # type: ignore[misc]


def algorithm_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 class of ``algo`` (one of :data:`ALGORITHMS`)."""
    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is not accepted; accepted: {', '.join(ALGORITHMS)}")
    module, name, _ = ALGORITHMS[algo]
    cls: type[BaseAlgorithm] = getattr(importlib.import_module(module), name)
    return cls


def policy_for(algo: str, policy: str) -> str | type[PeerAttentionPolicy]:
    """The policy argument SB3 gets for ``--policy``."""
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is not accepted; accepted: {', '.join(POLICIES)}")
    if policy == "attention":
        if algo not in ATTENTION_ALGOS:
            raise ValueError(
                f"policy='attention' is not accepted with algo={algo!r}; accepted with: {', '.join(ATTENTION_ALGOS)}"
            )
        return PeerAttentionPolicy
    return ALGORITHMS[algo][2]


def make_vec_env(env_id: str, config: PeerSelectionConfig, n_envs: int, seed: int) -> VecEnv:
    """``n_envs`` copies of the env with episode statistics (``VecMonitor``), seeded ``seed + i``.

    More than one copy: a :class:`BatchedPeerSelectionVecEnv`, whose copies'
    models train and evaluate in batched calls (same trajectories as a ``DummyVecEnv``, up to
    float rounding; docs/speed.md), a task distribution's too. One copy: the registered env in
    a ``DummyVecEnv``.
    """
    base: VecEnv
    if n_envs > 1:
        base = BatchedPeerSelectionVecEnv(config, n_envs)
    else:
        base = DummyVecEnv([lambda: registration.make(env_id, config)] * n_envs)
    venv = VecMonitor(base)
    venv.seed(seed)
    return venv


class EpisodeLogCallback(BaseCallback):
    """Writes every finished training episode to the run's :class:`~hlgym.runs.EpisodeLog`
    and logs the means of rounds, comm cost, bytes and accuracy to TensorBoard under ``hl/``."""

    def __init__(self, log: EpisodeLog, goal: float) -> None:
        super().__init__()
        self.log = log
        self.goal = goal

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                outcome = EpisodeOutcome.from_final_info(info, info["episode"]["r"], self.goal)
                row = self.log.append(self.num_timesteps, outcome)
                for key in TENSORBOARD_KEYS:
                    self.logger.record_mean(f"hl/{key}", float(row[key]))
        return True


class CheckpointCallback(BaseCallback):
    """Every ``every`` steps, a checkpoint of the model in the run folder (see
    :func:`save_checkpoint`), counting the episodes logged so far."""

    def __init__(self, run: RunFolder, every: int, log: EpisodeLog) -> None:
        super().__init__()
        self.run, self.every, self.log = run, every, log
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._last = self.num_timesteps
            save_checkpoint(self.model, self.run, self.log.n_rows)
        return True


def save_checkpoint(model: BaseAlgorithm, run: RunFolder, episodes: int) -> Path:
    """Save ``model`` (and an off-policy algorithm's replay buffer) as the run's newest
    checkpoint (:meth:`hlgym.runs.RunFolder.commit_checkpoint`); returns the model file."""
    buf = io.BytesIO()
    model.save(buf)
    replay = None
    if isinstance(model, OffPolicyAlgorithm):
        rbuf = io.BytesIO()
        model.save_replay_buffer(rbuf)
        replay = rbuf.getvalue()
    return run.commit_checkpoint(model.num_timesteps, episodes, buf.getvalue(), replay)


def learn_to_budget(
    model: BaseAlgorithm,
    run: RunFolder,
    log: EpisodeLog,
    callbacks: list[BaseCallback],
    timesteps: int,
    *,
    progress: bool,
    fresh: bool,
) -> Path:
    """Train ``model`` until ``timesteps`` (the steps it has not done yet; none when a resumed
    run already has them), then save the run's final checkpoint; returns its model file.
    ``fresh``: a new run (SB3 counts from 0), else a resumed one (it counts on)."""
    remaining = timesteps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=callbacks, progress_bar=progress, reset_num_timesteps=fresh, tb_log_name="run")
    return save_checkpoint(model, run, log.n_rows)


def load_checkpoint(algo: str, run: RunFolder, venv: VecEnv, device: str) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load the run's newest checkpoint onto ``venv``; returns the model and the manifest."""
    manifest = run.latest_checkpoint()
    if manifest is None:
        raise FileNotFoundError(f"{run.checkpoints} holds no checkpoint: nothing to resume")
    model = algorithm_class(algo).load(manifest["model"], env=venv, device=device)
    if manifest["replay"] is not None and isinstance(model, OffPolicyAlgorithm):
        model.load_replay_buffer(manifest["replay"])
    return model, manifest


class SB3Agent:
    """A trained SB3 model as an :class:`~hlgym.agents.Agent` (deterministic actions).

    Masks come from ``info["action_mask"]``: MaskablePPO uses them directly; for the
    others a masked-out choice is replaced by the best-scored online peer when the policy
    gives scores (attention), else left to the environment. The attention policy runs with
    any number of peers.
    """

    def __init__(self, model: BaseAlgorithm, deterministic: bool = True) -> None:
        self.model = model
        self.deterministic = deterministic
        self._state: Any = None
        self._start = True

    def reset(self) -> None:
        """Forget the recurrent state."""
        self._state = None
        self._start = True

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The policy's action for ``obs``."""
        mask = np.asarray(info["action_mask"], dtype=bool)
        policy = self.model.policy
        if isinstance(policy, PeerAttentionPolicy):
            with torch.inference_mode():
                x = torch.as_tensor(np.asarray(obs, dtype=np.float32)[None], device=policy.device)
                return best_online_peer(policy.peer_scores(x)[0][0], mask)
        kwargs: dict[str, Any] = {"deterministic": self.deterministic}
        if type(self.model).__name__ == "MaskablePPO":
            kwargs["action_masks"] = mask
        if type(self.model).__name__ == "RecurrentPPO":
            kwargs["state"] = self._state
            kwargs["episode_start"] = np.array([self._start])
        action, self._state = self.model.predict(obs, **kwargs)
        self._start = False
        return int(np.asarray(action).reshape(()))
