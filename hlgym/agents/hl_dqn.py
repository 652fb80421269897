"""The reference's meta-agent: a DQN over the HL state, reproduced faithfully.

Facts (yuweisunn/homogeneous-learning-tensorflow, ``node.py`` and ``main.py``): an MLP
``state -> 500 -> 200 -> n_peers`` (ReLU, Keras-default initialisation), MSE loss, Adam
lr 1e-3; a replay memory of 50,000 transitions; after every episode one fit on a random
minibatch of 128 transitions, Keras ``fit(batch_size=16, epochs=1)``, targets
``r + 0.9 * max Q(s')`` from the same network (no target network), each target row
L2-normalised as the reference does (``sklearn.preprocessing.normalize``); epsilon-greedy
with epsilon starting at 1 and multiplied by ``exp(-0.02)`` after each episode; the first
round is always at the start peer and is not stored; "done" includes the round limit.
"""

from __future__ import annotations

import copy
import io
import math
import os
import pickle
from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hlgym.atomic import write_bytes_atomic
from hlgym.records import EpisodeRecord, EpisodeRecorder

Transition = tuple[np.ndarray, int, float, np.ndarray, bool]


def _q_network(obs_dim: int, n_actions: int, hidden: tuple[int, ...], generator: torch.Generator) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = obs_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_actions))
    net = nn.Sequential(*layers)
    for m in net:
        if isinstance(m, nn.Linear):  # Keras defaults: Glorot-uniform kernel, zero bias
            nn.init.xavier_uniform_(m.weight, generator=generator)
            nn.init.zeros_(m.bias)
    return net


class HLDQNAgent:
    """The reference's DQN meta-agent (satisfies :class:`~hlgym.agents.Agent`).

    Args:
        obs_dim: Size of the flattened observation (100 for the reference's PCA state).
        n_actions: Number of peers.
        seed: Seeds the network's initial weights, exploration and minibatch sampling.
        hidden: Hidden layer widths.
        replay_size: Replay memory capacity [transitions].
        minibatch: Transitions per fit.
        fit_batch_size: Gradient-step batch size within a fit (Keras ``batch_size``).
        gamma: Discount factor.
        lr: Adam learning rate.
        epsilon: Initial exploration rate.
        epsilon_decay: Epsilon is multiplied by ``exp(-epsilon_decay)`` after each episode.
        normalize_targets: L2-normalise each target row, as the reference does.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        seed: int = 0,
        hidden: tuple[int, ...] = (500, 200),
        replay_size: int = 50_000,
        minibatch: int = 128,
        fit_batch_size: int = 16,
        gamma: float = 0.9,
        lr: float = 1e-3,
        epsilon: float = 1.0,
        epsilon_decay: float = 0.02,
        normalize_targets: bool = True,
    ) -> None:
        for name, value in (("obs_dim", obs_dim), ("n_actions", n_actions), ("minibatch", minibatch)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not accepted; accepted: an integer >= 1")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon={epsilon!r} is not accepted; accepted: a number in [0, 1]")
        self.hparams: dict[str, Any] = {
            "obs_dim": obs_dim,
            "n_actions": n_actions,
            "seed": seed,
            "hidden": tuple(hidden),
            "replay_size": replay_size,
            "minibatch": minibatch,
            "fit_batch_size": fit_batch_size,
            "gamma": gamma,
            "lr": lr,
            "epsilon": epsilon,
            "epsilon_decay": epsilon_decay,
            "normalize_targets": normalize_targets,
        }
        self.rng = np.random.default_rng(seed)
        self._gen = torch.Generator().manual_seed(seed)
        self.q = _q_network(obs_dim, n_actions, tuple(hidden), self._gen)
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=lr, eps=1e-7)  # Keras' Adam epsilon
        self.replay: deque[Transition] = deque(maxlen=replay_size)
        self.epsilon = epsilon
        self.episodes = 0
        self.timesteps = 0
        self.training = False
        self._pending: tuple[np.ndarray, int] | None = None

    # ------------------------------------------------------------------ acting

    def reset(self) -> None:
        """Start an episode."""
        self._pending = None

    def q_values(self, obs: Any) -> np.ndarray:
        """Q-values of every peer for one observation."""
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(1, -1))
            return self.q(x)[0].numpy()  # type: ignore[no-any-return]

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """Round 0: the holder (the start peer). Else epsilon-greedy while training, greedy
        otherwise, among the peers in ``info["action_mask"]``."""
        mask = np.asarray(info["action_mask"], dtype=bool)
        if int(info["round"]) == 0:
            return int(info["holder"])  # as the reference: the first round is at the starter
        if self.training and self.rng.random() <= self.epsilon:
            return int(self.rng.choice(np.flatnonzero(mask)))
        q = self.q_values(obs)
        q[~mask] = -np.inf
        return int(np.argmax(q))

    # ------------------------------------------------------------------ learning

    def remember(self, obs: Any, action: int, reward: float, next_obs: Any, done: bool, round_: int) -> None:
        """Store a transition; the forced first round (``round_ == 1`` after a reset at
        round 0) is not stored, as in the reference."""
        self.timesteps += 1
        if round_ <= 1:
            return
        flat = np.asarray(obs, dtype=np.float32).reshape(-1).copy()
        nxt = np.asarray(next_obs, dtype=np.float32).reshape(-1).copy()
        self.replay.append((flat, int(action), float(reward), nxt, bool(done)))

    def fit(self) -> float | None:
        """One fit on a random minibatch (no-op until the memory holds a minibatch).

        Returns:
            The mean MSE loss of the fit, or None if it did not fit.
        """
        n = self.hparams["minibatch"]
        if len(self.replay) < n:
            return None
        picks = self.rng.choice(len(self.replay), size=n, replace=False)
        batch = [self.replay[i] for i in picks]
        states = torch.as_tensor(np.stack([t[0] for t in batch]))
        next_states = torch.as_tensor(np.stack([t[3] for t in batch]))
        with torch.no_grad():  # not inference_mode: the targets are edited in place below
            targets = self.q(states)
            future = self.q(next_states).max(dim=1).values
        for i, (_, action, reward, _, done) in enumerate(batch):
            targets[i, action] = reward if done else reward + self.hparams["gamma"] * float(future[i])
        if self.hparams["normalize_targets"]:
            targets = F.normalize(targets, p=2.0, dim=1)
        losses = []
        order = torch.randperm(n, generator=self._gen)
        bs = self.hparams["fit_batch_size"]
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(self.q(states[idx]), targets[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            losses.append(loss.item())
        return float(np.mean(losses))

    def end_episode(self) -> float | None:
        """Fit once, decay epsilon, count the episode; returns the fit's loss."""
        loss = self.fit()
        self.epsilon *= math.exp(-self.hparams["epsilon_decay"])
        self.episodes += 1
        return loss

    def learn(
        self,
        env: gym.Env[Any, Any],
        total_timesteps: int,
        seed: int | None = None,
        callback: Callable[[EpisodeRecord, HLDQNAgent], None] | None = None,
        progress: bool = False,
    ) -> HLDQNAgent:
        """Train until ``self.timesteps`` reaches ``total_timesteps`` (whole episodes).

        Args:
            env: The environment.
            total_timesteps: Environment steps to reach, counting earlier training.
            seed: Seed of the first ``reset`` (later resets continue its RNG).
            callback: Called after each episode with its record and this agent.
            progress: Show a progress bar.
        """
        self.training = True
        bar = tqdm(total=total_timesteps, initial=self.timesteps, desc="hl_dqn", disable=not progress)
        try:
            first = True
            while self.timesteps < total_timesteps:
                self.reset()
                obs, info = env.reset(seed=seed if first else None)
                recorder = EpisodeRecorder(seed if first and seed is not None else -1, info, env)
                first = False
                done = False
                while not done:
                    action = self.act(obs, info)
                    next_obs, reward, terminated, truncated, info = env.step(action)
                    done = bool(terminated or truncated)
                    self.remember(obs, action, float(reward), next_obs, done, int(info["round"]))
                    obs = next_obs
                    recorder.step(float(reward), bool(terminated), info)
                    bar.update(1)
                self.end_episode()
                if callback is not None:
                    callback(recorder.finish(info), self)
        finally:
            bar.close()
            self.training = False
        return self

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, optimizer, replay, RNGs.
        Tensors and plain Python values only, so :meth:`load` reads it with
        ``torch.load(weights_only=True)`` (a checkpoint from someone else runs no code)."""
        replay = list(self.replay)
        dim = self.hparams["obs_dim"]
        return {
            "hparams": {**self.hparams, "hidden": list(self.hparams["hidden"])},
            "q": self.q.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": {
                "obs": torch.from_numpy(np.stack([t[0] for t in replay])) if replay else torch.zeros(0, dim),
                "action": torch.tensor([t[1] for t in replay], dtype=torch.int64),
                "reward": torch.tensor([t[2] for t in replay], dtype=torch.float64),
                "next_obs": torch.from_numpy(np.stack([t[3] for t in replay])) if replay else torch.zeros(0, dim),
                "done": torch.tensor([t[4] for t in replay], dtype=torch.bool),
            },
            "epsilon": self.epsilon,
            "episodes": self.episodes,
            "timesteps": self.timesteps,
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "gen": self._gen.get_state(),
        }

    def to_bytes(self) -> bytes:
        """The agent as :meth:`save` writes it."""
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the agent to ``path`` atomically (a crash leaves the old file whole)."""
        write_bytes_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HLDQNAgent:
        """Read an agent written by :meth:`save`."""
        try:
            state = torch.load(path, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise pickle.UnpicklingError(
                f"{path}: not an hl_dqn checkpoint of tensors and plain values (older hl_dqn checkpoints held numpy "
                f"objects; weights_only loading refuses anything that could run code): {exc}"
            ) from exc
        agent = cls(**state["hparams"])
        agent.q.load_state_dict(state["q"])
        agent.optimizer.load_state_dict(state["optimizer"])
        r = state["replay"]
        agent.replay.extend(
            (obs.numpy().copy(), int(a), float(w), nxt.numpy().copy(), bool(d))
            for obs, a, w, nxt, d in zip(r["obs"], r["action"], r["reward"], r["next_obs"], r["done"], strict=True)
        )
        agent.epsilon = state["epsilon"]
        agent.episodes = state["episodes"]
        agent.timesteps = state["timesteps"]
        agent.rng.bit_generator.state = state["rng"]
        agent._gen.set_state(state["gen"])
        return agent
