"""hlgym.envs.components.insight: the class_gap and loss_change columns (plug-ins by name)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch

from hlgym.agents.sb3 import BatchedPeerSelectionVecEnv
from hlgym.envs import PRESETS, PeerSelectionConfig, registration
from hlgym.envs.observation import columns

ENV = "hlgym/PeerSelection-v0"


def _env(component: str) -> tuple[PeerSelectionConfig, Any]:
    cfg = PRESETS[ENV].replace(components=[component], max_rounds=6)
    return cfg, registration.make(ENV, cfg)


def _probe_stats(env: Any, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The holder's model on every probe sample, recomputed here: per-sample correctness, labels, losses."""
    ep = env.unwrapped.episode
    model = env.unwrapped.model
    model.eval()
    with torch.no_grad():
        logits = model(ep.probe_x)
    y = ep.probe_y.long()
    hits = (logits.argmax(1) == y).double().numpy()
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none").double().numpy()
    return hits, y.numpy(), loss


def test_class_gap_is_the_peers_class_shares_times_the_models_class_errors() -> None:
    cfg, env = _env("class_gap")
    assert columns(cfg)[-1] == "class_gap" and env.observation_space.shape == (10, 9)
    obs, _ = env.reset(seed=4)
    for action in (3, 3, 7):
        obs, *_ = env.step(action)
    hits, labels, _ = _probe_stats(env, obs)
    error = np.array([1 - hits[labels == c].mean() if (labels == c).any() else 1 - hits.mean() for c in range(10)])
    shares = np.array(
        [np.bincount(y.numpy(), minlength=10) / len(y) for y in env.unwrapped.episode.peer_y], dtype=np.float64
    )
    assert obs[:, -1] == pytest.approx(shares @ error, abs=1e-6)
    plain = registration.make(ENV, PRESETS[ENV].replace(max_rounds=6))  # the column draws nothing
    plain.reset(seed=4)
    for action in (3, 3, 7):
        core, *_ = plain.step(action)
    np.testing.assert_array_equal(obs[:, :8], core)


def test_loss_change_reads_how_the_last_round_moved_each_probe_loss() -> None:
    _, env = _env("loss_change")
    obs, _ = env.reset(seed=4)
    assert np.all(obs[:, -1] == 0.5)  # nothing to compare with yet
    ep = env.unwrapped.episode
    starts = np.append(ep.probe_starts, len(ep.probe_y))

    def per_peer(loss: np.ndarray) -> np.ndarray:
        return np.array([loss[a:b].mean() for a, b in itertools.pairwise(starts)])

    before = per_peer(_probe_stats(env, obs)[2])
    obs, *_ = env.step(2)
    now = per_peer(_probe_stats(env, obs)[2])
    assert obs[:, -1] == pytest.approx(0.5 + 0.5 * np.tanh((now - before) / np.log(10)), abs=1e-6)
    assert obs[2, -1] < 0.5  # training at peer 2 lowered the loss on its own probe


@pytest.mark.parametrize("component", ["class_gap", "loss_change"])
def test_the_columns_are_the_same_in_the_batched_engine(component: str) -> None:
    cfg, env = _env(component)
    venv = BatchedPeerSelectionVecEnv(cfg, n_envs=2)
    venv.seed(7)
    batched = np.asarray(venv.reset())
    lone, _ = env.reset(seed=7)
    np.testing.assert_allclose(batched[0], lone, atol=1e-6)
    for action in (1, 5, 5):
        venv.step_async(np.array([action, 0]))
        batched = np.asarray(venv.step_wait()[0])
        lone = env.step(action)[0]
        np.testing.assert_allclose(batched[0], lone, atol=1e-5)


def test_no_registered_id_sees_them() -> None:
    for cfg in PRESETS.values():
        assert not {"class_gap", "loss_change"} & set(columns(cfg))
