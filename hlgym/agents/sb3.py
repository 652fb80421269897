"""Stable-Baselines3 (and sb3-contrib) meta-policies: factory, callbacks, checkpoints, agent.

The run folder a training writes (``train_meta.py`` drives it):

- ``checkpoints/ckpt_<steps>.zip`` (+ ``ckpt_<steps>_replay.pkl`` for DQN) and
  ``checkpoints/checkpoint.json``, written last, naming the newest complete checkpoint;
- ``episodes.csv`` and ``monitor.csv`` (see :class:`hlgym.runs.EpisodeLog`);
- ``tb/``: TensorBoard logs, with ``hl/rounds``, ``hl/comm_cost``, ``hl/accuracy``.
"""

from __future__ import annotations

import importlib
import io
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from hlgym.agents.attention import PeerAttentionPolicy
from hlgym.atomic import write_bytes_atomic, write_json_atomic
from hlgym.envs import BatchedPeerSelectionVecEnv, PeerSelectionConfig
from hlgym.runs import EpisodeLog

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
CHECKPOINT_META = "checkpoint.json"


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

    More than one copy: a :class:`~hlgym.envs.BatchedPeerSelectionVecEnv`, whose copies'
    models train and evaluate in batched calls (same trajectories as a ``DummyVecEnv``, up to
    float rounding; README "Speed"). One copy: ``gym.make(env_id, config=config)`` in a
    ``DummyVecEnv``.
    """
    base: VecEnv
    if n_envs > 1:
        base = BatchedPeerSelectionVecEnv(config, n_envs)
    else:
        base = DummyVecEnv([lambda: gym.make(env_id, config=config)])
    venv = VecMonitor(base)
    venv.seed(seed)
    return venv


class EpisodeLogCallback(BaseCallback):
    """Writes every finished training episode to the run's :class:`EpisodeLog` and logs the
    means of rounds, comm cost, bytes and accuracy to TensorBoard under ``hl/``."""

    def __init__(self, log: EpisodeLog, goal: float) -> None:
        super().__init__()
        self.log = log
        self.goal = goal

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if not done:
                continue
            row = {
                "timesteps": self.num_timesteps,
                "rounds": int(info["round"]),
                "comm_cost": float(info["comm_cost"]),
                "bytes_sent": int(info["bytes_sent"]),
                "final_accuracy": float(info["accuracy"]),
                "reached_goal": bool(info["accuracy"] >= self.goal),
                "return": float(info["episode"]["r"]),
            }
            self.log.append(row)
            for key, value in row.items():
                if key != "timesteps":
                    self.logger.record_mean(f"hl/{key}", float(value))
        return True


class CheckpointCallback(BaseCallback):
    """Every ``every`` steps: the model (and DQN's replay buffer), then ``checkpoint.json``
    naming them and the episodes logged so far. Each file is written atomically and the
    JSON last, so the newest checkpoint it names is always complete."""

    def __init__(self, folder: Path, every: int, log: EpisodeLog, keep: int = 2) -> None:
        super().__init__()
        self.folder, self.every, self.log, self.keep = folder, every, log, keep
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._last = self.num_timesteps
            save_checkpoint(self.model, self.folder, self.log.n_rows, self.keep)
        return True


def save_checkpoint(model: BaseAlgorithm, folder: Path, episodes: int, keep: int = 2) -> Path:
    """Save ``model`` as the newest checkpoint in ``folder``; returns the model file."""
    folder.mkdir(parents=True, exist_ok=True)
    steps = model.num_timesteps
    buf = io.BytesIO()
    model.save(buf)
    model_file = folder / f"ckpt_{steps}.zip"
    write_bytes_atomic(model_file, buf.getvalue())
    meta: dict[str, Any] = {"timesteps": steps, "episodes": episodes, "model": model_file.name, "replay": None}
    if isinstance(model, OffPolicyAlgorithm):
        rbuf = io.BytesIO()
        model.save_replay_buffer(rbuf)
        replay_file = folder / f"ckpt_{steps}_replay.pkl"
        write_bytes_atomic(replay_file, rbuf.getvalue())
        meta["replay"] = replay_file.name
    write_json_atomic(folder / CHECKPOINT_META, meta)
    # Older checkpoints beyond ``keep`` go only after the new one is committed.
    old = sorted(folder.glob("ckpt_*.zip"), key=lambda p: int(p.stem.split("_")[1]))[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
        (folder / f"{path.stem}_replay.pkl").unlink(missing_ok=True)
    return model_file


def read_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The newest checkpoint's metadata, or None if there is none."""
    meta = folder / CHECKPOINT_META
    if not meta.exists():
        return None
    data: dict[str, Any] = json.loads(meta.read_text())
    return data


def load_checkpoint(algo: str, folder: Path, venv: VecEnv, device: str) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load the newest checkpoint of ``folder`` onto ``venv``."""
    meta = read_checkpoint(folder)
    if meta is None:
        raise FileNotFoundError(f"{folder / CHECKPOINT_META} not found: nothing to resume")
    model = algorithm_class(algo).load(folder / meta["model"], env=venv, device=device)
    if meta["replay"] and isinstance(model, OffPolicyAlgorithm):
        model.load_replay_buffer(folder / meta["replay"])
    return model, meta


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
                scores = policy.peer_scores(x)[0][0].cpu().numpy()
            scores[~mask] = -np.inf
            return int(np.argmax(scores))
        kwargs: dict[str, Any] = {"deterministic": self.deterministic}
        if type(self.model).__name__ == "MaskablePPO":
            kwargs["action_masks"] = mask
        if type(self.model).__name__ == "RecurrentPPO":
            kwargs["state"] = self._state
            kwargs["episode_start"] = np.array([self._start])
        action, self._state = self.model.predict(obs, **kwargs)
        self._start = False
        return int(np.asarray(action).reshape(()))
