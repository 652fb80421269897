"""The environment through Gymnasium's and SB3's eyes, determinism and semantics."""

from __future__ import annotations

import math
import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from hlgym.envs import PeerSelectionConfig, PeerSelectionEnv
from hlgym.envs.registration import PRESETS
from hlgym.envs.topology import hl_random

from .conftest import tiny_overrides

IDS = list(PRESETS)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env(env_id: str) -> None:
    env = gym.make(env_id, **tiny_overrides(env_id))
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env(env_id: str) -> None:
    env = gym.make(env_id, **tiny_overrides(env_id))
    sb3_check_env(env.unwrapped, warn=False)


Step = tuple[np.ndarray, Any, dict[str, Any]]


def rollout(env: gym.Env[Any, Any], seed: int, actions: list[int]) -> list[Step]:
    obs, info = env.reset(seed=seed)
    out: list[Step] = [(obs.copy(), None, info)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs.copy(), reward, info))
        if terminated or truncated:
            break
    return out


def assert_same(a: list[Step], b: list[Step]) -> None:
    assert len(a) == len(b)
    for (oa, ra, ia), (ob, rb, ib) in zip(a, b, strict=True):
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb
        assert ia.keys() == ib.keys()
        for k in ia:
            if isinstance(ia[k], np.ndarray):
                np.testing.assert_array_equal(ia[k], ib[k])
            else:
                assert ia[k] == ib[k], k


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_trajectory(env_id: str) -> None:
    actions = [3, 1, 4, 1, 5, 9]
    a = rollout(gym.make(env_id, **tiny_overrides(env_id)), 7, actions)
    b = rollout(gym.make(env_id, **tiny_overrides(env_id)), 7, actions)
    assert_same(a, b)
    c = rollout(gym.make(env_id, **tiny_overrides(env_id)), 8, actions)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=False)), "a different seed changed nothing"


def test_pickle_round_trip() -> None:
    env = PeerSelectionEnv(max_rounds=6)
    env.reset(seed=3)
    env.step(2)
    clone = pickle.loads(pickle.dumps(env))
    for action in (5, 6, 1):
        a = env.step(action)
        b = clone.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
        assert a[4]["accuracy"] == b[4]["accuracy"]


def test_reward_of_a_hand_checked_step() -> None:
    env = PeerSelectionEnv(goal=0.9, reward_base=32.0, cost_weight=2.0)
    env.reset(seed=0)
    d = hl_random(10)
    _, reward, terminated, _, info = env.step(4)
    acc = info["accuracy"]
    assert info["hop_cost"] == pytest.approx(d[0, 4])
    assert reward == pytest.approx(32.0 ** (acc - 0.9) - 2.0 * d[0, 4] - 1.0, abs=1e-12)
    assert info["rewards"] == pytest.approx(
        {"accuracy": 32.0 ** (acc - 0.9), "communication": -2.0 * d[0, 4], "step": -1.0}
    )
    assert math.fsum(info["rewards"].values()) == pytest.approx(reward)
    assert info["comm_cost"] == pytest.approx(d[0, 4])
    assert info["bytes_sent"] == env.n_params * 4
    assert terminated == (acc >= 0.9)


def test_reference_distance_matrix() -> None:
    # The reference: np.random.seed(0); b = random_sample((10, 10)); (b + b.T) / 2, zero
    # diagonal, divided by 10 in the reward. First entry computed by hand from seed 0.
    d = hl_random(10)
    b01, b10 = 0.7151893663724195, 0.7917250380826646  # b[0][1], b[1][0] from seed 0
    assert d[0, 0] == 0.0  # b[0][0] = 0.5488... is overwritten
    assert d[0, 1] == pytest.approx((b01 + b10) / 2 / 10)
    np.testing.assert_array_equal(d, d.T)
    assert d.max() < 0.1


def test_staying_costs_nothing_and_moves_no_bytes() -> None:
    env = PeerSelectionEnv()
    env.reset(seed=1)
    _, _, _, _, info = env.step(0)
    assert info["hop_cost"] == 0.0 and info["bytes_sent"] == 0 and info["holder"] == 0


def test_truncation_and_step_after_end() -> None:
    env = PeerSelectionEnv(max_rounds=3, goal=1.0)
    env.reset(seed=0)
    flags = [env.step(p)[2:4] for p in (1, 2, 3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_first_round_at_start_plays_round_one_at_the_start_peer() -> None:
    env = PeerSelectionEnv(first_round_at_start=True, start_peer=2, max_rounds=5, goal=1.0)
    _, info = env.reset(seed=0)
    assert info["round"] == 1 and info["holder"] == 2
    assert env.route == [2, 2]


def test_action_masks_and_offline_peers() -> None:
    env = PeerSelectionEnv(offline_prob=0.5, max_rounds=30, goal=1.0)
    _, info = env.reset(seed=0)
    assert env.action_masks().all()  # everyone is online before the first round
    saw_offline = False
    for _ in range(20):
        mask = env.action_masks()
        np.testing.assert_array_equal(mask, info["action_mask"])
        assert mask[info["holder"]]
        offline = np.flatnonzero(~mask)
        if offline.size:
            saw_offline = True
            holder = info["holder"]
            _, _, _, _, info = env.step(int(offline[0]))
            assert not info["delivered"] and info["holder"] == holder and info["hop_cost"] > 0
        else:
            _, _, _, _, info = env.step(int(np.flatnonzero(mask)[-1]))
    assert saw_offline


@pytest.mark.parametrize("observation", ["peer_features", "hl_pca"])
def test_observations_in_space(observation: str) -> None:
    env = PeerSelectionEnv(observation=observation, pca_components=3, max_rounds=5)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for p in (1, 2, 3):
        obs, *_ = env.step(p)
        assert env.observation_space.contains(obs)


def test_hl_pca_state_is_rank_one_as_in_the_reference() -> None:
    # After a round, 9 peers hold the previous model and one the trained one: the centred
    # weights have rank 1, so only the first component is non-zero.
    env = PeerSelectionEnv(observation="hl_pca", pca_components=10)
    obs, _ = env.reset(seed=0)
    assert not obs.any()
    obs, *_ = env.step(4)
    coords = obs.reshape(10, 10)
    assert np.abs(coords[:, 0]).max() > 0
    assert not coords[:, 1:].any()
    assert np.argmax(np.abs(coords[:, 0])) == 4


def test_peer_features_probe_reflects_the_peers_data() -> None:
    env = PeerSelectionEnv(max_rounds=10)
    env.reset(seed=0)
    obs, *_ = env.step(3)
    for _ in range(2):
        obs, *_ = env.step(3)
    # After training at peer 3 only, its probe loss is the lowest of all peers.
    assert np.argmin(obs[:, 2]) == 3
    assert obs[3, 0] == 1.0 and obs[:, 0].sum() == 1.0


def test_render_modes() -> None:
    env = PeerSelectionEnv(render_mode="ansi", max_rounds=3)
    env.reset(seed=0)
    env.step(1)
    text = env.render()
    assert isinstance(text, str) and len(text.splitlines()) == 2 and "0 -> 1" in text
    env = PeerSelectionEnv(render_mode="rgb_array", max_rounds=3)
    env.reset(seed=0)
    env.step(1)
    frame = env.render()
    assert isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0


def test_euclidean_topology_is_redrawn_per_seed() -> None:
    env = PeerSelectionEnv(topology="euclidean")
    assert env.distances is None  # drawn by each reset
    env.reset(seed=0)
    d0 = np.array(env.distances)
    env.reset(seed=1)
    d1 = env.distances
    assert d1 is not None and not np.array_equal(d0, d1)
    assert np.allclose(d1, d1.T) and d1.max() <= 0.1 + 1e-12


def test_user_matrix_topology() -> None:
    m = [[0, 1, 2], [1, 0, 3], [2, 3, 0]]
    env = PeerSelectionEnv(n_peers=3, topology=m)
    env.reset(seed=0)
    _, _, _, _, info = env.step(2)
    assert info["hop_cost"] == 2.0


def test_config_object_and_overrides() -> None:
    cfg = PeerSelectionConfig(n_peers=4, goal=0.5)
    env = gym.make("hlgym/PeerSelection-v0", config=cfg, max_rounds=2)
    base = env.unwrapped
    assert isinstance(base, PeerSelectionEnv)
    assert base.config.n_peers == 4 and base.config.max_rounds == 2
    assert env.action_space == gym.spaces.Discrete(4)


def test_eval_samples_rewards_on_a_fixed_subset() -> None:
    env = PeerSelectionEnv(eval_samples=100, max_rounds=5)
    _, info = env.reset(seed=0)
    data = env.episode.data
    assert len(data.y_eval) == 100
    share = np.bincount(data.y_test.numpy()) / len(data.y_test)
    assert np.abs(np.bincount(data.y_eval.numpy()) - 100 * share).max() < 1  # stratified
    _, _, _, _, info = env.step(3)
    assert info["accuracy"] * 100 == pytest.approx(round(info["accuracy"] * 100), abs=1e-4)  # a share of 100 images
    assert 0.0 <= env.full_test_accuracy() <= 1.0
    other = PeerSelectionEnv(eval_samples=100)
    np.testing.assert_array_equal(other.episode.data.y_eval.numpy(), data.y_eval.numpy())  # the same in every env
    with pytest.raises(ValueError, match="eval_samples=0 is not accepted"):
        PeerSelectionEnv(eval_samples=0)
