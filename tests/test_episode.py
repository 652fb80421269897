"""The seam of a round: episode bookkeeping, model work behind one interface, and state that
exists before the first reset."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from hlgym.agents.sb3 import BatchedPeerSelectionVecEnv
from hlgym.envs import Episode, PeerSelectionConfig, PeerSelectionEnv, ResetNeededError
from hlgym.envs.registration import PRESETS
from hlgym.envs.rounds import RoundRunner, model_spec
from hlgym.models.batched import StackedModels
from hlgym.models.training import build_model, flat_weights
from hlgym.models.work import ModelList, ModelSpec

from .conftest import tiny_overrides

CNN = ModelSpec("cnn", (1, 28, 28), 10, 64, "adam", 1e-3, 1e-7, n_optimizers=3)
MLP = ModelSpec("mlp", (1, 8, 8), 10, 16, "sgd", 1e-2, 1e-7, n_optimizers=1)


@pytest.mark.parametrize("spec", [CNN, MLP], ids=["cnn", "mlp"])
def test_both_model_works_draw_build_models_weights(spec: ModelSpec) -> None:
    # The batched engine draws a copy's initial weights straight into its slot: bit for bit
    # what build_model draws from the same generator (so it builds no model to discard).
    want = flat_weights(build_model(spec.model, spec.input_shape, spec.n_classes, torch.Generator().manual_seed(5), 16))
    stacked = StackedModels.from_spec(spec, 3)
    stacked.initialize([2], [torch.Generator().manual_seed(5)])
    single = ModelList(spec, 1)
    single.initialize([0], [torch.Generator().manual_seed(5)])
    assert torch.equal(stacked.flat(2), want)
    assert torch.equal(single.flat(0), want)
    assert stacked.n_params == single.n_params == want.numel()
    assert not stacked.flat(1).any()  # the other slots are untouched


def test_envs_leave_the_global_rng_alone() -> None:
    # All randomness flows from the env's seed. (Before 0.2 every reset built a model with
    # torch's default initialisation, which drew from the global RNG that SB3 samples
    # actions from: env resets shifted the agent's random stream.)
    state = torch.get_rng_state()
    build_model("cnn", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    env = PeerSelectionEnv(max_rounds=3, observation="hl_pca", pca_components=2)
    env.reset(seed=0)
    env.step(1)
    venv = BatchedPeerSelectionVecEnv(n_envs=2, max_rounds=2)
    venv.seed(0)
    venv.reset()
    for _ in range(3):  # crosses the copies' auto-resets
        venv.step(np.array([1, 2]))
    assert torch.equal(torch.get_rng_state(), state)


def test_runner_refuses_too_few_slots() -> None:
    cfg = PeerSelectionConfig()
    data = Episode.load_data(cfg)
    models = ModelList(model_spec(cfg, data), n_slots=1)
    episodes = [Episode(cfg, models.n_params, data) for _ in range(2)]
    with pytest.raises(ValueError, match="the episodes use 2 model slots but the model work has 1"):
        RoundRunner(episodes, models)


@pytest.mark.parametrize("env_id", [i for i, c in PRESETS.items() if c.tasks is None])  # tasks: test_tasks.py
def test_state_exists_before_reset(env_id: str) -> None:
    env = gym.make(env_id, render_mode="ansi", **tiny_overrides(env_id)).unwrapped
    assert isinstance(env, PeerSelectionEnv)
    n = env.config.n_peers
    np.testing.assert_array_equal(env.action_masks(), np.ones(n, dtype=bool))
    assert env.render() == ""
    assert env.route == [] and env.main_classes is None and env.last_timing == {}
    assert env.n_params > 0
    assert env.distances is not None and env.distances.shape == (n, n)  # hl_random is fixed
    assert env.episode.holder == env.config.start_peer and not env.episode.running
    with pytest.raises(ResetNeededError, match=r"full_test_accuracy\(\) needs an episode: call reset\(\) first"):
        env.full_test_accuracy()
    with pytest.raises(RuntimeError, match=r"step\(\) called before reset\(\)"):
        env.step(0)


def test_rgb_render_before_reset_says_what_to_do() -> None:
    env = PeerSelectionEnv(render_mode="rgb_array")
    with pytest.raises(ResetNeededError, match="call reset"):
        env.render()
    env.reset(seed=0)
    frame = env.render()
    assert isinstance(frame, np.ndarray) and frame.ndim == 3


def test_full_test_accuracy_after_reset_and_the_model_property() -> None:
    env = PeerSelectionEnv(eval_samples=100, max_rounds=3)
    env.reset(seed=0)
    env.step(4)
    acc = env.full_test_accuracy()
    assert 0.0 <= acc <= 1.0
    logits = env.model(env.episode.data.x_test[:5])
    assert logits.shape == (5, 10)


def test_copies_of_a_batched_env_cannot_be_stepped() -> None:
    venv = BatchedPeerSelectionVecEnv(n_envs=2, max_rounds=3)
    venv.seed(0)
    venv.reset()
    copy = venv.envs[0]
    with pytest.raises(AttributeError, match=r"one copy of a batched vector env has no step\(\)"):
        copy.step(1)
    with pytest.raises(AttributeError, match=r"has no reset\(\)"):
        copy.reset()
    with pytest.raises(ValueError, match="cannot be called on one copy"):
        venv.env_method("reset")
    # Reads reach the copy's episode and its model.
    assert copy.route == [0] and copy.holder == 0
    assert 0.0 <= copy.full_test_accuracy() <= 1.0
    weights = flat_weights(copy.model)
    assert weights.numel() == copy.n_params


def test_deepcopy_continues_identically_and_shares_the_data() -> None:
    env = PeerSelectionEnv(max_rounds=8, observation="hl_pca", pca_components=3, offline_prob=0.3)
    env.reset(seed=2)
    env.step(3)
    clone = copy.deepcopy(env)
    assert clone.episode.data is env.episode.data  # the per-process device tensors are not copied
    for action in (5, 1, 7):
        a, b = env.step(action), clone.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4] and a[4]["accuracy"] == b[4]["accuracy"]
