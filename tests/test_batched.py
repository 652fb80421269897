"""The batched vector envs behave as independent envs (up to float rounding)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.vec_env import DummyVecEnv

import hlgym  # noqa: F401  (registers the ids)
from hlgym.agents.sb3 import BatchedPeerSelectionVecEnv
from hlgym.envs import BatchedPeerSelectionVectorEnv, PeerSelectionConfig, PeerSelectionEnv
from hlgym.models.batched import StackedModels
from hlgym.models.training import (
    build_model,
    flat_weights,
    local_train,
    make_optimizer,
    per_sample_hits,
    per_sample_loss,
)
from hlgym.models.work import Distillation, ModelList, ModelSpec, TrainJob

# Small settings so episodes end (and copies auto-reset) within the steps a test takes.
CASES: dict[str, dict[str, Any]] = {
    "mlp-peer_features": {"max_rounds": 6},
    "mlp-offline-hl_pca": {"max_rounds": 5, "offline_prob": 0.3, "observation": "hl_pca", "pca_components": 3},
    # The reference's rules (forced first round, hl_pca, per-peer optimizers) on a small CNN task,
    # with SGD: Adam's first steps move a weight by about lr whatever its gradient's size, so a
    # max-pool choice flipped by float rounding (test_stacked_models_match_one_model_at_a_time)
    # would move a weight by ~1e-3 instead of ~1e-6 (Adam's per-copy steps are checked there).
    "cnn-reference-rules": {
        "dataset": "synthetic",
        "model": "cnn",
        "main_samples": 60,
        "other_samples": 10,
        "per_peer_optimizer": True,
        "first_round_at_start": True,
        "observation": "hl_pca",
        "pca_components": 4,
        "max_rounds": 4,
        "goal": 0.95,
        "optimizer": "sgd",
        "lr": 0.05,
    },
    # Every transfer mode and fault, with the infos they add.
    "mlp-average-faults": {
        "max_rounds": 5,
        "transfer": "average",
        "transfer_mix": 0.3,
        "link_failure_prob": 0.3,
        "byzantine_peers": 2,
        "byzantine_mode": "noise",
        "track_peer_accuracy": True,
    },
    "mlp-distill-mean_peer": {"max_rounds": 5, "transfer": "distill", "accuracy_of": "mean_peer", "goal": 0.2},
    "mlp-distill-features-hl_pca": {
        "max_rounds": 5,
        "transfer": "distill",
        "distill_on": "features",
        "observation": "hl_pca",
        "pca_components": 3,
        "byzantine_peers": 3,
        "byzantine_mode": "sign_flip",
    },
    "mlp-distill-label_flip": {
        "max_rounds": 5,
        "transfer": "distill",
        "distill_temperature": 3.0,
        "byzantine_peers": 2,
        "byzantine_mode": "label_flip",
    },
    "mlp-logits": {"max_rounds": 5, "transfer": "logits", "public_samples": 70, "offline_prob": 0.2},
    # Domain shift: the peers' domains, target images and MMD alignment (relay; a per-peer mode).
    "mlp-rotate-mmd": {"max_rounds": 5, "domain_shift": "rotate", "alignment": "mmd"},
    "mlp-noise-random-distill-mmd": {
        "max_rounds": 5,
        "domain_shift": "noise",
        "source_domains": [0.0, 0.1, 0.2],
        "target_domain": 0.4,
        "domain_rule": "random",
        "transfer": "distill",
        "alignment": "mmd",
        "target_samples": 40,
    },
    # Modality experts: each peer holds one strip of its images (relay; a per-peer mode on rows).
    "mlp-modalities": {"max_rounds": 5, "modality_split": "columns"},
    "mlp-modalities-rows-random-logits": {
        "max_rounds": 5,
        "modality_split": "rows",
        "modalities": 3,
        "modality_rule": "random",
        "transfer": "logits",
        "public_samples": 60,
    },
    "cnn-distill-features": {
        "dataset": "synthetic",
        "model": "cnn",
        "main_samples": 60,
        "other_samples": 10,
        "max_rounds": 4,
        "goal": 0.95,
        "optimizer": "sgd",
        "lr": 0.05,
        "transfer": "distill",
        "distill_on": "features",
    },
}
# hl_pca's coordinates amplify weight rounding (PCA of nearly equal rows); probe features do not.
OBS_TOL = {"peer_features": 1e-5, "hl_pca": 3e-3}  # max seen over 8 seeds: 1.4e-6, 6.6e-4
# The logits transfer amplifies rounding too (each peer's own model fits the sender's logits,
# then its own data; the probe-loss column shows it). Max seen over seeds 11..18 on a 2-core
# AMD EPYC (AVX2): 1.1e-3 (mlp-logits), 2.6e-4 (mlp-modalities-rows-random-logits; 2.8e-5
# with SGD at lr 0.05); the relay case mlp-modalities there under 3.1e-6. Reward and
# accuracy checks as for the other cases.
LOGITS_OBS_TOL = 3e-3


@pytest.mark.parametrize("case", list(CASES))
def test_same_trajectories_as_dummy_vec_env(case: str) -> None:
    cfg = PeerSelectionConfig().replace(**CASES[case])
    n = 3
    dummy = DummyVecEnv([lambda: PeerSelectionEnv(cfg) for _ in range(n)])
    batched = BatchedPeerSelectionVecEnv(cfg, n_envs=n)
    dummy.seed(11)
    batched.seed(11)
    obs_d, obs_b = np.asarray(dummy.reset()), np.asarray(batched.reset())
    tol = max(OBS_TOL[cfg.observation], LOGITS_OBS_TOL if cfg.transfer == "logits" else 0.0)
    np.testing.assert_allclose(obs_b, obs_d, atol=tol)
    rng = np.random.default_rng(0)
    episodes_ended = 0
    for _ in range(14):
        actions = rng.integers(0, cfg.n_peers, n)
        step_d, rew_d, done_d, infos_d = dummy.step(actions)
        step_b, rew_b, done_b, infos_b = batched.step(actions)
        np.testing.assert_allclose(np.asarray(step_b), np.asarray(step_d), atol=tol)
        np.testing.assert_allclose(rew_b, rew_d, atol=1e-5)
        np.testing.assert_array_equal(done_b, done_d)
        for info_d, info_b in zip(infos_d, infos_b, strict=True):
            assert set(info_b) == set(info_d)
            for key in ("round", "holder", "delivered", "TimeLimit.truncated", "bytes_sent"):
                assert info_b[key] == info_d[key], key
            for key in ("accuracy", "mean_peer_accuracy"):
                assert info_b.get(key) == pytest.approx(info_d.get(key), abs=1e-6)
            if "modality_accuracy" in info_d:
                np.testing.assert_allclose(info_b["modality_accuracy"], info_d["modality_accuracy"], atol=1e-6)
            if "terminal_observation" in info_d:
                np.testing.assert_allclose(info_b["terminal_observation"], info_d["terminal_observation"], atol=tol)
        episodes_ended += int(done_d.sum())
    assert episodes_ended >= n  # the auto-reset path ran
    # The copies drew what lone envs draw: byzantine peers, public sets.
    for i in range(n):
        (episode_d,) = dummy.get_attr("episode", [i])
        (episode_b,) = batched.get_attr("episode", [i])
        np.testing.assert_array_equal(episode_b.byzantine, episode_d.byzantine)
        assert torch.equal(episode_b.public_x, episode_d.public_x)
        np.testing.assert_array_equal(episode_b.peer_domains, episode_d.peer_domains)
        np.testing.assert_array_equal(episode_b.peer_modalities, episode_d.peer_modalities)
        assert torch.equal(episode_b.target_x, episode_d.target_x)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_stacked_models_match_one_model_at_a_time(optimizer: str) -> None:
    # In float64: in float32 the grouped convolutions round differently from one model's, which
    # now and then flips a max-pool's choice between two values closer than the rounding (about
    # one window in 10^5), a different but equally valid gradient; here we check our
    # arithmetic (grouping, batch order, the per-copy Adam steps), which must agree to rounding.
    lr, eps = 1e-3, 1e-7
    gen = torch.Generator().manual_seed(0)
    models = [build_model("cnn", (1, 28, 28), 10, gen).double() for _ in range(3)]
    stacked = StackedModels(models[0], 3, 2, optimizer, lr, eps, channels_last=False)
    for i, m in enumerate(models):
        stacked.load(i, m)
    x = torch.rand(3, 70, 1, 28, 28, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (3, 70), generator=gen)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    twins = [torch.Generator().manual_seed(i) for i in range(3)]
    optimizers = [[make_optimizer(optimizer, list(m.parameters()), lr, eps) for _ in range(2)] for m in models]
    for state in (0, 1, 0):
        for i, m in enumerate(models):
            local_train(m, optimizers[i][state], x[i], y[i], 1, 32, gens[i])
        stacked.train([TrainJob(i, state, x[i], y[i], twins[i]) for i in range(3)], 1, 32)
    x_test = torch.rand(300, 1, 28, 28, generator=gen, dtype=torch.float64)
    y_test = torch.randint(0, 10, (300,), generator=gen)
    loss, hits = stacked.per_sample_loss([2, 0], x_test, y_test)
    for row, i in enumerate((2, 0)):
        torch.testing.assert_close(stacked.flat(i), flat_weights(models[i]), atol=1e-10, rtol=0)
        ref_loss, ref_hits = per_sample_loss(models[i], x_test, y_test)
        torch.testing.assert_close(loss[row], ref_loss, atol=1e-10, rtol=0)
        assert torch.equal(hits[row], ref_hits)
    # The accuracy's path (no cross-entropy) reads the same correctness, batched and one model at a time.
    assert torch.equal(stacked.per_sample_hits([2, 0], x_test, y_test), hits)
    assert torch.equal(per_sample_hits(models[2], x_test, y_test), per_sample_loss(models[2], x_test, y_test)[1])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_copies_of_different_data_sizes_train_together_as_lone_models(optimizer: str) -> None:
    # 70, 33 and 5 samples at batch 32: 3, 2 and 1 steps an epoch, last batches of 6, 1 and 5;
    # one padded group whose copies stop stepping when their data runs out (float64, as above).
    lr, eps = 1e-2, 1e-7
    gen = torch.Generator().manual_seed(1)
    models = [build_model("mlp", (1, 8, 8), 10, gen, hidden_units=16).double() for _ in range(3)]
    stacked = StackedModels(models[0], 3, 1, optimizer, lr, eps, channels_last=False)
    for i, m in enumerate(models):
        stacked.load(i, m)
    sizes = (70, 33, 5)
    x = [torch.rand(n, 1, 8, 8, generator=gen, dtype=torch.float64) for n in sizes]
    y = [torch.randint(0, 10, (n,), generator=gen) for n in sizes]
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    twins = [torch.Generator().manual_seed(i) for i in range(3)]
    optimizers = [make_optimizer(optimizer, list(m.parameters()), lr, eps) for m in models]
    for _ in range(2):
        for i, m in enumerate(models):
            local_train(m, optimizers[i], x[i], y[i], 2, 32, gens[i])
        stacked.train([TrainJob(i, 0, x[i], y[i], twins[i]) for i in range(3)], 2, 32)
    for i in range(3):
        torch.testing.assert_close(stacked.flat(i), flat_weights(models[i]), atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["teacher-logits", "teacher-features", "soft-targets"])
def test_stacked_models_distil_as_the_model_list(kind: str) -> None:
    # Both model works in float64: slots 0 and 1 learn from slots 2 and 3 (frozen as the call
    # found them), or fit soft targets first; then every slot's weights agree to rounding.
    spec = ModelSpec("cnn", (1, 20, 20), 4, 8, "adam", 1e-2, 1e-7, n_optimizers=1)
    listed = ModelList(spec, 4)
    for i, module in enumerate(listed.modules):
        module.double()
        keras_generator = torch.Generator().manual_seed(i)
        listed.set_flat(i, torch.rand(listed.n_params, generator=keras_generator, dtype=torch.float64) - 0.5)
    stacked = StackedModels(listed.modules[0], 4, 1, "adam", 1e-2, 1e-7, channels_last=False)
    for i, module in enumerate(listed.modules):
        stacked.load(i, module)
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(2, 40, 1, 20, 20, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (2, 40), generator=gen)
    public = torch.rand(2, 25, 1, 20, 20, generator=gen, dtype=torch.float64)
    for works in (listed, stacked):
        jobs = []
        for i in range(2):
            if kind == "soft-targets":
                ((logits, _),) = works.outputs([i + 2], [public[i]])
                d = Distillation(0.7, 2.5, public_x=public[i], public_logits=logits)
            else:
                d = Distillation(0.7, 2.5, kind.split("-")[1], teacher=i + 2)
            jobs.append(TrainJob(i, 0, x[i], y[i], torch.Generator().manual_seed(i), d))
        works.train(jobs, 2, 16)
    for i in range(4):
        torch.testing.assert_close(stacked.flat(i), listed.flat(i), atol=1e-10, rtol=0)
    assert not torch.equal(stacked.flat(0), flat_weights(listed.modules[2]))  # it trained


def test_make_vec_builds_the_batched_env_and_matches_sync() -> None:
    batched = gym.make_vec("hlgym/PeerSelection-v0", num_envs=2, max_rounds=3)
    assert isinstance(batched, BatchedPeerSelectionVectorEnv)
    sync = gym.make_vec("hlgym/PeerSelection-v0", num_envs=2, vectorization_mode="sync", max_rounds=3)
    obs_b, info_b = batched.reset(seed=5)
    obs_s, info_s = sync.reset(seed=5)
    np.testing.assert_allclose(obs_b, obs_s, atol=1e-5)
    np.testing.assert_array_equal(info_b["holder"], info_s["holder"])
    for t in range(8):  # crosses episode ends: NEXT_STEP resets on the step after
        actions = np.array([t % 10, (3 * t) % 10])
        obs_b, rew_b, term_b, trunc_b, info_b = batched.step(actions)
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(actions)
        np.testing.assert_allclose(obs_b, obs_s, atol=1e-5)
        np.testing.assert_allclose(rew_b, rew_s, atol=1e-5)
        np.testing.assert_array_equal(term_b | trunc_b, term_s | trunc_s)
        np.testing.assert_array_equal(info_b["round"], info_s["round"])
    assert batched.single_observation_space == sync.single_observation_space


def _play_two_rounds(autoreset_mode: str) -> tuple[BatchedPeerSelectionVectorEnv, np.ndarray, dict[str, Any]]:
    """Two copies through episodes of two rounds; returns the env, the last obs and infos."""
    envs = BatchedPeerSelectionVectorEnv(2, max_rounds=2, autoreset_mode=autoreset_mode)
    envs.reset(seed=0)
    envs.step(np.array([1, 2]))
    obs, _, terminated, truncated, infos = envs.step(np.array([3, 4]))
    assert truncated.all() and not terminated.any()
    return envs, obs, infos


def test_same_step_autoreset_reports_the_final_observation() -> None:
    _, obs, infos = _play_two_rounds("SameStep")
    assert infos["_final_obs"].all()  # Gymnasium's mask of the envs that carry the key
    final = np.stack(infos["final_obs"])
    assert final.shape == (2, 10, 8)
    assert infos["final_info"]["round"].tolist() == [2, 2]  # a dict of arrays, as SyncVectorEnv gives
    assert infos["round"].tolist() == [0, 0]  # the new episodes' reset infos
    assert not np.allclose(obs, final)


def test_masks_attributes_and_methods_reach_the_copies() -> None:
    venv = BatchedPeerSelectionVecEnv(n_envs=2, offline_prob=0.4)
    venv.seed(3)
    venv.reset()
    _, _, _, infos = venv.step(np.array([4, 5]))
    masks = get_action_masks(venv)
    assert masks.shape == (2, 10)
    np.testing.assert_array_equal(masks, np.stack([info["action_mask"] for info in infos]))
    # The copies' own models are synced before their methods run.
    full = venv.env_method("full_test_accuracy")
    assert full == pytest.approx([info["accuracy"] for info in infos], abs=1 / 500)
    assert venv.get_attr("route", indices=[1])[0][-1] == infos[1]["holder"]


def test_bad_input_names_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"n_envs=0 is not accepted; accepted: an integer >= 1"):
        BatchedPeerSelectionVecEnv(n_envs=0)
    with pytest.raises(ValueError, match=r"autoreset_mode='later' is not accepted; accepted: 'NextStep'"):
        BatchedPeerSelectionVectorEnv(2, autoreset_mode="later")
    venv = BatchedPeerSelectionVecEnv(n_envs=2)
    venv.seed(0)
    venv.reset()
    with pytest.raises(ValueError, match=r"action=10 is not accepted"):
        venv.step(np.array([3, 10]))
    # The bad action moved no copy.
    assert [env.route for env in venv.envs] == [[0], [0]]
    with pytest.raises(ValueError, match=r"method 'step' cannot be called on one copy"):
        venv.env_method("step", 1)


def test_disabled_autoreset_and_reset_mask() -> None:
    envs, _, _ = _play_two_rounds("Disabled")
    with pytest.raises(RuntimeError, match=r"envs \[0, 1\] ended"):
        envs.step(np.array([1, 1]))
    routes = [list(env.route) for env in envs.envs]
    _, infos = envs.reset(options={"reset_mask": np.array([True, False])})
    assert infos["_round"].tolist() == [True, False]  # only env 0 reported a reset
    assert envs.envs[0].route == [0] and envs.envs[1].route == routes[1]
    with pytest.raises(ValueError, match=r"options\['reset_mask'\] has shape \(3,\)"):
        envs.reset(options={"reset_mask": np.array([True, False, True])})
