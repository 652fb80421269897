"""Scenarios: domain shift (peers' images in domains, the test set in an unseen one) and
modality experts (each peer holds one view of its examples)."""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import hlgym  # noqa: F401  (registers the ids)
from hlgym.agents import RandomAgent
from hlgym.agents import evaluate as evaluate_agent
from hlgym.envs import PeerSelectionConfig, PeerSelectionEnv
from hlgym.envs.components.domain_shift import apply_shift
from hlgym.envs.components.groups import assign_peers
from hlgym.envs.components.modality import ExpertsSpec, ModalityExperts, full_views, strip_bounds, view
from hlgym.envs.components.transfer import TRANSFERS
from hlgym.envs.datasets import device_data
from hlgym.envs.episode import BYTES_PER_PARAM
from hlgym.models.loss import mmd
from hlgym.models.training import build_model, evaluate, logits_and_features

SHIFT: dict[str, Any] = {"domain_shift": "rotate", "max_rounds": 6}


def _raw() -> torch.Tensor:
    return device_data("digits", None, "cpu", False, None).x_train


# ---------------------------------------------------------------------------- transforms


def test_rotate_by_90_degrees_is_a_quarter_turn_counter_clockwise() -> None:
    x = _raw()[:5]
    turned = apply_shift(x, "rotate", 90.0, torch.Generator())
    # Bilinear sampling at exact pixel centres: a quarter turn moves pixels without blending.
    torch.testing.assert_close(turned, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    assert torch.equal(apply_shift(x, "rotate", 0.0, torch.Generator()), x)


def test_transforms_change_the_images_as_their_levels_say() -> None:
    x, g = _raw()[:50], torch.Generator().manual_seed(0)
    torch.testing.assert_close(apply_shift(x, "invert", 1.0, g), 1 - x)
    torch.testing.assert_close(apply_shift(x, "invert", 0.5, g), torch.full_like(x, 0.5))
    noisy = apply_shift(x, "noise", 0.2, g)
    assert noisy.min() >= 0 and noisy.max() <= 1 and 0.05 < (noisy - x).abs().mean() < 0.2
    assert torch.equal(apply_shift(x, "noise", 0.0, g), x)
    blurred = apply_shift(x, "blur", 1.0, g)
    assert (blurred - x).abs().mean() > 0.02 and blurred.max() < x.max()
    thick = apply_shift(x, "thicken", 1, g)
    assert (thick >= x).all() and thick.sum() > 1.3 * x.sum()
    # noise draws from the generator: the same seed, the same images
    a = apply_shift(x, "noise", 0.3, torch.Generator().manual_seed(5))
    b = apply_shift(x, "noise", 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_domain_rules() -> None:
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(assign_peers("cycle", 7, 3, rng), [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(assign_peers("blocks", 7, 3, rng), [0, 0, 0, 1, 1, 2, 2])
    drawn = assign_peers("random", 200, 3, rng)
    assert set(drawn.tolist()) == {0, 1, 2}


def test_mmd_is_zero_for_one_sample_and_grows_with_the_shift() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 6, generator=g)
    assert abs(float(mmd(a, a))) < 1e-6
    near, far = mmd(a, torch.randn(40, 6, generator=g) + 0.2), mmd(a, torch.randn(40, 6, generator=g) + 2.0)
    assert 0 < float(near) < float(far) <= 2
    source = a.clone().requires_grad_()
    # A zero distance (every pair of a sample with itself) has a finite gradient.
    mmd(source, source.detach()).backward()  # type: ignore[no-untyped-call]
    assert source.grad is not None and torch.isfinite(source.grad).all()
    batched = mmd(torch.stack([a, a + 1]), torch.stack([a + 1, a + 1]))
    torch.testing.assert_close(batched, torch.stack([mmd(a, a + 1), mmd(a + 1, a + 1)]))


# ---------------------------------------------------------------------------- the env


def test_peers_hold_their_domains_and_the_reward_tests_the_target() -> None:
    env = PeerSelectionEnv(**SHIFT)
    assert env.peer_domains is None  # before the first reset
    env.reset(seed=3)
    assert env.peer_domains is not None
    np.testing.assert_array_equal(env.peer_domains, [0, 15, 30, 45, 60] * 2)
    raw = _raw()
    episode = env.episode
    for peer in (0, 7):
        expected = apply_shift(
            raw[torch.from_numpy(episode.peer_indices[peer])], "rotate", env.peer_domains[peer], torch.Generator()
        )
        torch.testing.assert_close(episode.peer_x[peer], expected)
    base = device_data("digits", None, "cpu", False, None)
    torch.testing.assert_close(episode.data.x_eval, apply_shift(base.x_eval, "rotate", 75.0, torch.Generator()))
    assert episode.target_x.shape == (64, 1, 8, 8)
    held = np.concatenate(episode.peer_indices)
    assert not np.isin(episode.target_indices, held).any()  # unlabeled images no peer holds
    plain = PeerSelectionEnv(max_rounds=6)
    assert plain.peer_domains is None
    plain.reset(seed=3)
    assert plain.peer_domains is None


def test_a_mixed_target_renders_the_test_images_in_every_source_domain_in_turn() -> None:
    env = PeerSelectionEnv(**{**SHIFT, "target_domain": "mixed"})
    env.reset(seed=3)
    base = device_data("digits", None, "cpu", False, None)
    x_eval = env.episode.data.x_eval
    for k, level in enumerate((0, 15, 30, 45, 60)):
        rows = torch.arange(k, base.x_eval.shape[0], 5)
        torch.testing.assert_close(x_eval[rows], apply_shift(base.x_eval[rows], "rotate", level, torch.Generator()))
    # The starter's unlabeled target images are mixed the same way (row 1 at 15 degrees).
    target = env.episode.data.x_train[torch.from_numpy(env.episode.target_indices)]
    torch.testing.assert_close(env.episode.target_x[1], apply_shift(target[1:2], "rotate", 15, torch.Generator())[0])
    # Its own cache entry: the 75-degree set of the same data is not reused.
    other = PeerSelectionEnv(**SHIFT)
    other.reset(seed=3)
    assert not torch.equal(other.episode.data.x_eval, x_eval)


def test_observation_says_which_peers_are_near_the_target() -> None:
    env = PeerSelectionEnv(**SHIFT)
    assert env.observation_space.shape == (10, 9)
    near, far = [], []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        assert env.observation_space.contains(obs)
        assert env.peer_domains is not None
        near.append(obs[env.peer_domains == 60, 8].mean())
        far.append(obs[env.peer_domains == 0, 8].mean())
    # Rotated by 15 degrees from the target vs 75: the features tell them apart.
    assert np.mean(near) < np.mean(far)


def test_random_rule_draws_domains_per_episode_and_copies_agree() -> None:
    env = PeerSelectionEnv(
        domain_shift="noise", source_domains=[0.0, 0.1, 0.2], target_domain=0.4, domain_rule="random"
    )
    env.reset(seed=1)
    assert env.peer_domains is not None
    first = env.peer_domains.copy()
    env.reset(seed=2)
    assert not np.array_equal(first, env.peer_domains)
    clone = pickle.loads(pickle.dumps(env))
    actions = [4, 2, 2, 7]
    for a in actions:
        ours, theirs = env.step(a), clone.step(a)
        np.testing.assert_array_equal(ours[0], theirs[0])
        assert ours[1] == theirs[1]


def test_alignment_sends_the_target_images_once_and_changes_training() -> None:
    plain = PeerSelectionEnv(**SHIFT)
    aligned = PeerSelectionEnv(**SHIFT, alignment="mmd", alignment_weight=2.0)
    plain.reset(seed=0)
    aligned.reset(seed=0)
    image_bytes = 64 * 8 * 8 * BYTES_PER_PARAM
    infos = [(plain.step(a)[4], aligned.step(a)[4]) for a in (0, 3, 5)]
    assert infos[0][1]["bytes_sent"] == infos[0][0]["bytes_sent"] == 0  # staying at the starter sends nothing
    assert infos[1][1]["bytes_sent"] == infos[1][0]["bytes_sent"] + image_bytes
    assert infos[2][1]["bytes_sent"] == infos[2][0]["bytes_sent"] + image_bytes  # once, not per hop
    w_plain = torch.cat([p.reshape(-1) for p in plain.model.parameters()])
    w_aligned = torch.cat([p.reshape(-1) for p in aligned.model.parameters()])
    assert not torch.allclose(w_plain, w_aligned)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"domain_shift": "shear"}, "domain_shift='shear' is not accepted; accepted: 'rotate', 'invert'"),
        (
            {"domain_shift": "rotate", "target_domain": 30},
            "target_domain=30 is not accepted; accepted: a domain that is not a source",
        ),
        (
            {"domain_shift": "invert"},
            "accepted: a list of domains of 'invert', each a number in [0, 1]",
        ),
        ({"domain_shift": "thicken", "source_domains": [0, 1.5], "target_domain": 3}, "each an integer >= 0"),
        ({"domain_shift": "rotate", "source_domains": [0, 15, 15]}, "accepted: distinct domains"),
        ({"domain_shift": "rotate", "source_domains": []}, "source_domains=() is not accepted"),
        (
            {"domain_shift": "noise", "source_domains": [0, 0.1], "target_domain": -1},
            "target_domain=-1 is not accepted; accepted: a domain of 'noise' (a number >= 0) or 'mixed'",
        ),
        (
            {"domain_shift": "rotate", "target_domain": "unseen"},
            "target_domain='unseen' is not accepted; accepted: a domain of 'rotate' (a finite number) or 'mixed'",
        ),
        (
            {"domain_shift": "rotate", "domain_rule": "spiral"},
            "domain_rule='spiral' is not accepted; accepted: 'cycle', 'blocks', 'random'",
        ),
        ({"alignment": "mmd"}, "alignment='mmd' is not accepted; accepted: 'none' without a domain_shift"),
        (
            {"domain_shift": "rotate", "alignment": "coral"},
            "alignment='coral' is not accepted; accepted: 'none', 'mmd'",
        ),
        (
            {"domain_shift": "rotate", "alignment_weight": -1},
            "alignment_weight=-1 is not accepted; accepted: a number >= 0",
        ),
        (
            {"domain_shift": "rotate", "target_samples": 0},
            "target_samples=0 is not accepted; accepted: an integer >= 1",
        ),
    ],
)
def test_bad_domain_shift_settings_name_what_is_accepted(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        PeerSelectionConfig(**kwargs)
    assert message in str(err.value)


def test_too_many_target_samples_names_the_pool() -> None:
    with pytest.raises(ValueError, match=r"target_samples=5000 is not accepted; accepted: an integer in \[1, 297\]"):
        PeerSelectionEnv(domain_shift="rotate", target_samples=5000)


def test_no_unassigned_images_says_how_to_leave_some() -> None:
    with pytest.raises(ValueError, match=r"accepted: none: every training sample is a peer.s .*samples_per_peer"):
        PeerSelectionEnv(domain_shift="rotate", partition="iid")


def test_registered_kwargs_are_plain_json() -> None:
    spec = gym.spec("hlgym/DomainShift-v0")
    restored = gym.envs.registration.EnvSpec.from_json(spec.to_json())
    assert restored.kwargs == spec.kwargs
    config = PeerSelectionConfig.from_dict(spec.kwargs["config"])
    assert config.source_domains == (0.0, 15.0, 30.0, 45.0, 60.0) and config.domain_shift == "rotate"
    assert PeerSelectionConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------------------- modality experts

VIEWS: dict[str, Any] = {"modality_split": "columns", "max_rounds": 6}


def test_strips_and_views_keep_one_strip_of_every_image() -> None:
    assert strip_bounds(8, 2) == [(0, 4), (4, 8)]
    assert strip_bounds(8, 3) == [(0, 2), (2, 5), (5, 8)]
    x = full_views(_raw()[:4])
    assert x.shape == (4, 2, 8, 8) and torch.equal(x[:, 1], torch.ones(4, 8, 8))
    right = view(x, "columns", 2, 1)
    assert torch.equal(right[..., 4:], x[..., 4:]) and not right[..., :4].any()
    top = view(x, "rows", 3, 0)
    assert torch.equal(top[..., :2, :], x[..., :2, :]) and not top[..., 2:, :].any()


def _experts(modalities: int = 2) -> ModalityExperts:
    spec = ExpertsSpec("columns", modalities, 16, 0.07)
    model = build_model("mlp", (2, 8, 8), 10, torch.Generator().manual_seed(0), 24, spec)
    assert isinstance(model, ModalityExperts)
    return model


def test_one_view_is_embedded_by_its_own_encoder_and_fused_views_by_the_mean() -> None:
    model = _experts()
    x = full_views(_raw()[:6])
    left, right = view(x, "columns", 2, 0), view(x, "columns", 2, 1)
    z_left, z_right, z_fused = (logits_and_features(model, v)[1] for v in (left, right, x))
    with torch.no_grad():
        model.encoders[1].weight.add_(1.0)  # type: ignore[operator]  # the right half's encoder
    torch.testing.assert_close(logits_and_features(model, left)[1], z_left)
    assert not torch.allclose(logits_and_features(model, right)[1], z_right)
    torch.testing.assert_close(z_fused, torch.nn.functional.normalize(z_left + z_right, dim=1))
    # InfoNCE against the class embeddings at temperature 0.07 is cross-entropy on cosine / 0.07.
    logits = model(x)
    classes = torch.nn.functional.normalize(model.classes.weight, dim=1)
    z = logits_and_features(model, x)[1]
    torch.testing.assert_close(logits, z @ classes.T / 0.07)
    assert torch.equal(logits.argmax(dim=1), (z @ classes.T).argmax(dim=1))  # the nearest class embedding


def test_a_peer_trains_its_views_encoder_the_projection_and_the_classes() -> None:
    env = PeerSelectionEnv(**VIEWS)
    env.reset(seed=0)
    assert env.peer_modalities is not None
    np.testing.assert_array_equal(env.peer_modalities, [0, 1] * 5)
    before = {k: v.clone() for k, v in env.model.state_dict().items()}
    env.step(2)  # peer 2 holds the left half
    after = env.model.state_dict()
    assert torch.equal(after["encoders.1.weight"], before["encoders.1.weight"])
    for name in ("encoders.0.weight", "projection.weight", "classes.weight"):
        assert not torch.equal(after[name], before[name]), name
    episode = env.episode
    for peer in (2, 3):
        x, strip = episode.peer_x[peer], slice(0, 4) if peer % 2 == 0 else slice(4, 8)
        assert x.shape[1] == 2 and torch.equal(x[:, 1, :, strip], torch.ones_like(x[:, 1, :, strip]))
        assert int(x[:, 1].sum()) == x.shape[0] * 32  # nothing outside the strip


def test_modality_accuracy_is_each_views_test_accuracy_and_an_observation_column() -> None:
    env = PeerSelectionEnv(**VIEWS)
    assert env.observation_space.shape == (10, 9)
    obs, info = env.reset(seed=1)
    for a in (0, 1, 4):
        obs, _, _, _, info = env.step(a)
    data = env.episode.data
    for m in range(2):
        expected = evaluate(env.model, data.eval_views[m], data.y_eval).accuracy
        assert info["modality_accuracy"][m] == pytest.approx(expected, abs=1e-6)
    assert info["accuracy"] == pytest.approx(evaluate(env.model, data.x_eval, data.y_eval).accuracy, abs=1e-6)
    assert env.peer_modalities is not None
    np.testing.assert_allclose(obs[:, 8], info["modality_accuracy"][env.peer_modalities], atol=1e-6)


def test_modality_rules_and_pickling() -> None:
    env = PeerSelectionEnv(modality_split="rows", modalities=3, modality_rule="random", max_rounds=6)
    env.reset(seed=1)
    assert env.peer_modalities is not None
    first = env.peer_modalities.copy()
    env.reset(seed=2)
    assert not np.array_equal(first, env.peer_modalities)
    clone = pickle.loads(pickle.dumps(env))
    for a in (4, 2, 2, 7):
        ours, theirs = env.step(a), clone.step(a)
        np.testing.assert_array_equal(ours[0], theirs[0])
        assert ours[1] == theirs[1]
        np.testing.assert_array_equal(ours[4]["modality_accuracy"], theirs[4]["modality_accuracy"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"modality_split": "diagonal"},
            "modality_split='diagonal' is not accepted; accepted: 'columns', 'rows'",
        ),
        ({"modality_split": "columns", "modalities": 1}, "modalities=1 is not accepted; accepted: an integer >= 2"),
        (
            {"modality_split": "columns", "model": "cnn"},
            "model='cnn' is not accepted; accepted: 'mlp' with modality_split='columns'",
        ),
        (
            {"modality_split": "rows", "domain_shift": "rotate"},
            "domain_shift='rotate' is not accepted; accepted: None with modality_split='rows' (one scenario",
        ),
        (
            {"modality_split": "columns", "contrastive_temperature": 0},
            "contrastive_temperature=0 is not accepted; accepted: a number > 0",
        ),
        (
            {"modality_split": "columns", "modality_rule": "spiral"},
            "modality_rule='spiral' is not accepted; accepted: 'cycle', 'blocks', 'random'",
        ),
    ],
)
def test_bad_modality_settings_name_what_is_accepted(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        PeerSelectionConfig(**kwargs)
    assert message in str(err.value)


def test_more_modalities_than_the_image_has_pixels_is_refused() -> None:
    with pytest.raises(ValueError, match=r"modalities=9 is not accepted; accepted: an integer in \[2, 8\] \(the dig"):
        PeerSelectionEnv(modality_split="columns", modalities=9)
    PeerSelectionEnv(modality_split="rows", modalities=8)  # one pixel per strip is fine


# ---------------------------------------------------------------------------- both scenarios

SCENARIOS: dict[str, dict[str, Any]] = {
    "domain shift + mmd": {**SHIFT, "alignment": "mmd"},
    "modality experts + a byzantine peer": {**VIEWS, "byzantine_peers": 1},
}


@pytest.mark.parametrize("transfer", TRANSFERS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_transfer_mode_runs_in_every_scenario(scenario: str, transfer: str) -> None:
    env = PeerSelectionEnv(**SCENARIOS[scenario], transfer=transfer, public_samples=50)
    obs, _ = env.reset(seed=0)
    for a in (2, 2, 6, 9):
        obs, reward, *_ = env.step(a)
        assert env.observation_space.contains(obs) and np.isfinite(float(reward))


@pytest.mark.parametrize(
    ("env_id", "field", "groups", "labels"),
    [
        (
            "hlgym/DomainShift-v0",
            "peer_domains",
            [0, 15, 30, 45, 60] * 2,
            ["0°: peers 0, 5", "60°: peers 4, 9"],
        ),
        (
            "hlgym/ModalityExperts-v0",
            "peer_modalities",
            [0, 1] * 5,
            ["modality 0: peers 0, 2, 4, 6, 8", "modality 1: peers 1, 3, 5, 7, 9"],
        ),
    ],
)
def test_route_map_colours_peers_by_their_group(env_id: str, field: str, groups: list[int], labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from hlgym.plots import figures

    env = gym.make(env_id, max_rounds=4)
    (record,) = evaluate_agent(RandomAgent(seed=0), env, episodes=1).records
    assert getattr(record, field) == groups
    drawn_labels = figures.route(record).get_legend_handles_labels()[1]
    assert set(labels) <= set(drawn_labels)
    drawn = gym.make(env_id, max_rounds=4, render_mode="rgb_array")
    drawn.reset(seed=0)
    image = drawn.render()
    assert isinstance(image, np.ndarray) and image.shape[2] == 3
