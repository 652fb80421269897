"""The batched engine on a task distribution (hlgym.envs.vector.BatchedTaskDistribution):
the same tasks and trajectories as TaskDistributionEnv copies, its masks and padding, SB3."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import hlgym  # noqa: F401  (registers the ids)
from hlgym.agents.sb3 import BatchedPeerSelectionVecEnv, make_vec_env
from hlgym.envs import PeerSelectionConfig, TaskDistributionEnv, TaskSpec
from hlgym.envs.vector import BatchedTaskDistribution

from .test_tasks import SMALL

CONFIG = PeerSelectionConfig(tasks=TaskSpec.from_dict(SMALL), max_rounds=3)


def _close(a: Any, b: Any) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-5, atol=1e-6)


def test_copies_draw_the_tasks_and_play_the_episodes_of_lone_envs() -> None:
    n, seed = 3, 11
    engine = BatchedTaskDistribution(CONFIG, n)
    lone = [TaskDistributionEnv(CONFIG) for _ in range(n)]
    got = engine.reset(range(n), [seed + i for i in range(n)], [None] * n)
    want = [env.reset(seed=seed + i) for i, env in enumerate(lone)]
    rng = np.random.default_rng(0)
    tasks = set()
    for step in range(12):  # max_rounds 3: every copy crosses several resets, drawing new tasks
        for (obs, info), (w_obs, w_info) in zip(got, want, strict=True):
            _close(obs, w_obs)
            assert info["task"] == w_info["task"] and info["n_peers"] == w_info["n_peers"], step
            np.testing.assert_array_equal(info["action_mask"], w_info["action_mask"])
            tasks.add(info["task"]["family"])
        actions = [int(rng.integers(6)) for _ in range(n)]  # padding rows included: the model stays
        results = engine.step(range(n), actions)
        finished = []
        for i, (env, action, (obs, reward, term, trunc, info)) in enumerate(zip(lone, actions, results, strict=True)):
            w_obs, w_reward, w_term, w_trunc, w_info = env.step(action)
            _close(obs, w_obs)
            _close(reward, w_reward)
            assert (term, trunc, info["absent_peer"]) == (w_term, w_trunc, w_info["absent_peer"]), (step, i)
            want[i] = (w_obs, w_info)
            got[i] = (obs, info)
            if term or trunc:
                finished.append(i)
        for i, fresh in zip(finished, engine.autoreset(finished), strict=True):
            got[i] = fresh
            want[i] = lone[i].reset()  # its RNG continues, as the engine's copy's does
    assert tasks == {"skew", "dir"}  # both families were drawn


def test_sb3_trains_the_generalist_on_the_batched_engine() -> None:
    from stable_baselines3 import PPO

    venv = make_vec_env("hlgym/TaskDistribution-v0", CONFIG, 2, seed=0)
    assert isinstance(venv.venv, BatchedPeerSelectionVecEnv)  # type: ignore[attr-defined]
    venv.reset()
    masks = venv.env_method("action_masks")
    assert [m.shape for m in masks] == [(6,), (6,)]
    assert venv.get_attr("task")[0]["family"] in {"skew", "dir"}
    model = PPO("MlpPolicy", venv, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(16)
    assert model.num_timesteps == 16


def test_tasks_of_different_networks_are_refused_by_name() -> None:
    spec = {**SMALL, "train": [*SMALL["train"], {"name": "wide", "hidden_units": 128, "n_peers": 4}]}
    with pytest.raises(ValueError, match="tasks whose networks or model slots differ are not accepted by the batched"):
        BatchedTaskDistribution(CONFIG.replace(tasks=spec), 2)
    per_peer = {**SMALL, "train": [{"name": "avg", "transfer": "average", "n_peers": 4}]}
    with pytest.raises(ValueError, match="or a per-peer transfer mode"):
        BatchedTaskDistribution(CONFIG.replace(tasks=per_peer), 2)
