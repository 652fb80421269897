"""Transfer modes and faults: what travels, what arrives, what a byzantine peer returns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env

from hlgym.agents import RoundRobinAgent, evaluate
from hlgym.envs import PeerSelectionEnv
from hlgym.envs.episode import BYTES_PER_PARAM, Move
from hlgym.models.loss import soft_target_loss
from hlgym.models.training import flat_weights
from hlgym.runs import format_table


def _play(env: PeerSelectionEnv, seed: int, actions: list[int]) -> list[tuple[float, float, int]]:
    env.reset(seed=seed)
    out = []
    for a in actions:
        _, reward, _, _, info = env.step(a)
        out.append((float(reward), float(info["accuracy"]), int(info["bytes_sent"])))
    return out


ROUTE = [3, 3, 7, 1, 0, 7, 2]


def test_average_with_mix_one_is_the_relay() -> None:
    # The receiver takes the arriving model whole and trains it with its own Adam state:
    # the relay with per-peer optimizers, bit for bit.
    relay = _play(PeerSelectionEnv(max_rounds=10), 4, ROUTE)
    average = _play(PeerSelectionEnv(max_rounds=10, transfer="average", transfer_mix=1.0), 4, ROUTE)
    assert average == relay


@pytest.mark.parametrize("mode", ["average", "distill", "logits"])
def test_every_peer_keeps_its_own_model(mode: str) -> None:
    env = PeerSelectionEnv(transfer=mode, max_rounds=10)
    env.reset(seed=0)
    start = flat_weights(env.peer_model(0))
    for peer in range(10):  # one seed-drawn initial model, everywhere
        assert torch.equal(flat_weights(env.peer_model(peer)), start)
    env.step(4)
    env.step(6)
    changed = [not torch.equal(flat_weights(env.peer_model(p)), start) for p in range(10)]
    assert changed == [p in (4, 6) for p in range(10)]  # only the receivers trained
    assert torch.equal(flat_weights(env.model), flat_weights(env.peer_model(6)))  # the holder's is scored
    with pytest.raises(ValueError, match=r"peer=10 is not accepted"):
        env.peer_model(10)


def test_average_blends_before_training() -> None:
    # With lr tiny the local training barely moves the weights: the receiver's model is the blend.
    env = PeerSelectionEnv(transfer="average", transfer_mix=0.25, lr=1e-9, optimizer="sgd", max_rounds=10)
    env.reset(seed=1)
    env.step(2)  # peer 2 now differs from everyone else
    arriving = flat_weights(env.peer_model(2))
    own = flat_weights(env.peer_model(5))
    env.step(5)
    torch.testing.assert_close(flat_weights(env.peer_model(5)), 0.25 * arriving + 0.75 * own, atol=1e-6, rtol=0)


def test_soft_target_loss_is_hintons_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 10, generator=gen), torch.randn(5, 10, generator=gen)
    t = 3.0
    expected = (
        F.kl_div(
            F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True, reduction="none"
        ).sum(dim=1)
        * t**2
    )
    torch.testing.assert_close(soft_target_loss(student, teacher, t), expected)
    assert float(soft_target_loss(teacher, teacher, t).abs().max()) < 1e-6


@pytest.mark.parametrize("on", ["logits", "features"])
def test_distillation_moves_the_student_towards_the_teacher(on: str) -> None:
    # Peer 4 learns first; sending its model to peer 7 as a teacher (weight 10) pulls peer 7's
    # outputs towards it compared with the same round without distillation.
    gaps = []
    for weight in (0.0, 10.0):
        env = PeerSelectionEnv(transfer="distill", distill_on=on, distill_weight=weight, max_rounds=10)
        env.reset(seed=2)
        for _ in range(3):
            env.step(4)
        env.step(7)
        x = env.episode.data.x_eval
        with torch.no_grad():
            gaps.append(float((env.peer_model(7)(x) - env.peer_model(4)(x)).pow(2).mean()))
    assert gaps[1] < 0.8 * gaps[0]


def test_logits_mode_sends_logits_on_a_public_set_no_peer_holds() -> None:
    env = PeerSelectionEnv(transfer="logits", public_samples=60, max_rounds=10)
    _, info = env.reset(seed=3)
    episode = env.episode
    held = np.concatenate(episode.peer_indices)
    assert episode.public_indices.size == 60 and np.intersect1d(held, episode.public_indices).size == 0
    first = episode.public_indices.copy()
    env.step(2)
    env.step(2)  # staying moves nothing
    _, _, _, _, info = env.step(5)
    assert info["bytes_sent"] == 2 * 60 * 10 * BYTES_PER_PARAM  # logits, float32, per hop to another peer
    env.reset(seed=4)
    assert not np.array_equal(env.episode.public_indices, first)  # drawn per episode


def test_link_failures_pay_the_hop_and_deliver_nothing() -> None:
    env = PeerSelectionEnv(link_failure_prob=0.6, max_rounds=30)
    env.reset(seed=5)
    assert env.distances is not None
    failed = delivered = 0
    for peer in [1, 2, 3, 4, 5, 6, 7, 8, 9] * 2:
        before = env.episode.holder, env.episode.comm_cost, env.episode.bytes_sent, env.episode.accuracy
        hop = float(env.distances[before[0], peer])
        _, _, _, _, info = env.step(peer)
        assert info["comm_cost"] == pytest.approx(before[1] + hop)
        assert info["bytes_sent"] == before[2] + env.n_params * BYTES_PER_PARAM
        if info["delivered"]:
            delivered += 1
            assert info["holder"] == peer
        else:
            failed += 1
            assert info["holder"] == before[0] and info["accuracy"] == before[3]  # nothing trained
            assert "(link failed)" in env.episode.log[-1]
    assert failed > 3 and delivered > 3
    _, _, _, _, info = env.step(env.episode.holder)
    assert info["delivered"]  # staying uses no link


def test_byzantine_peers_are_drawn_per_episode_and_not_observed() -> None:
    clean, bad = PeerSelectionEnv(), PeerSelectionEnv(byzantine_peers=3)
    sets = set()
    for seed in range(6):
        obs_clean, _ = clean.reset(seed=seed)
        obs_bad, _ = bad.reset(seed=seed)
        np.testing.assert_array_equal(obs_bad, obs_clean)  # nothing in the observation tells them apart
        assert bad.byzantine.sum() == 3 and not clean.byzantine.any()
        sets.add(tuple(np.flatnonzero(bad.byzantine)))
    assert len(sets) > 1


@pytest.mark.parametrize("transfer", ["relay", "average"])
def test_what_byzantine_peers_return(transfer: str) -> None:
    kw: dict[str, Any] = {"transfer": transfer, "max_rounds": 10}
    clean = PeerSelectionEnv(**kw)
    clean.reset(seed=6)
    start = flat_weights(clean.model)
    probe = PeerSelectionEnv(byzantine_peers=1, **kw)
    probe.reset(seed=6)
    liar = int(np.flatnonzero(probe.byzantine)[0])
    clean.step(liar)
    honest = flat_weights(clean.model)
    for mode in ("sign_flip", "noise", "label_flip"):
        env = PeerSelectionEnv(byzantine_peers=1, byzantine_mode=mode, byzantine_scale=0.5, **kw)
        env.reset(seed=6)
        assert env.byzantine[liar]
        env.step(liar)
        returned = flat_weights(env.model)
        if mode == "sign_flip":  # moved by minus its local update
            torch.testing.assert_close(returned, start - (honest - start), atol=1e-6, rtol=0)
        elif mode == "noise":
            assert float((returned - honest).std()) == pytest.approx(0.5, rel=0.05)
        else:  # trained on other labels: a different model, no larger than an honest update
            assert not torch.equal(returned, honest)
            training = env.episode.training(Move(prev=liar, peer=liar, hop=0.0, delivered=True))
            assert training is not None and bool((training.y != env.episode.peer_y[liar]).all())


def test_mean_peer_accuracy_is_tracked_on_request() -> None:
    _, info = PeerSelectionEnv().reset(seed=0)
    assert "mean_peer_accuracy" not in info
    env = PeerSelectionEnv(transfer="average", track_peer_accuracy=True)
    _, info = env.reset(seed=0)
    assert info["mean_peer_accuracy"] == info["accuracy"]  # every peer holds the initial model
    _, _, _, _, info = env.step(3)
    x, y = env.episode.data.x_eval, env.episode.data.y_eval
    with torch.no_grad():
        accs = [float((env.peer_model(p)(x).argmax(1) == y).float().mean()) for p in range(10)]
    assert info["mean_peer_accuracy"] == pytest.approx(np.mean(accs), abs=1e-6)
    relay = PeerSelectionEnv(track_peer_accuracy=True)
    relay.reset(seed=0)
    _, _, _, _, info = relay.step(3)
    assert info["mean_peer_accuracy"] == info["accuracy"]  # every peer holds the travelling model


def test_accuracy_of_mean_peer_scores_every_peers_model() -> None:
    # The reward, the goal, info["accuracy"] and full_test_accuracy read every peer's model,
    # averaged; the probes still read the holder's (the model that would travel).
    holder = PeerSelectionEnv(transfer="average", track_peer_accuracy=True)
    network = PeerSelectionEnv(transfer="average", accuracy_of="mean_peer")
    holder.reset(seed=2)
    network.reset(seed=2)
    for peer in [3, 3, 7]:
        h_obs, _, _, _, h_info = holder.step(peer)
        n_obs, _, _, _, n_info = network.step(peer)
    assert n_info["accuracy"] == pytest.approx(h_info["mean_peer_accuracy"], abs=1e-6)
    assert n_info["accuracy"] < h_info["accuracy"]  # three of ten models trained
    assert n_info["rewards"]["accuracy"] == pytest.approx(32.0 ** (n_info["accuracy"] - 0.86))
    x, y = network.episode.data.x_test, network.episode.data.y_test
    with torch.no_grad():
        accs = [float((network.peer_model(p)(x).argmax(1) == y).float().mean()) for p in range(10)]
    assert network.full_test_accuracy() == pytest.approx(np.mean(accs), abs=1e-6)
    # The probe columns (loss, error): the holder's model on each peer's probe.
    assert np.array_equal(h_obs[:, 2:4], n_obs[:, 2:4])
    assert np.allclose(n_obs[:, 7], n_info["accuracy"])
    # The goal reads it: a goal the holder's model passes but the network's mean does not.
    goal = (h_info["accuracy"] + n_info["accuracy"]) / 2
    for env, ends in [
        (PeerSelectionEnv(transfer="average", goal=goal), True),
        (PeerSelectionEnv(transfer="average", goal=goal, accuracy_of="mean_peer"), False),
    ]:
        env.reset(seed=2)
        ended = False
        for peer in [3, 3, 7]:
            ended = env.step(peer)[2]
            if ended:
                break
        assert ended is ends
    # In the relay every peer shares the one model: the same episode bit for bit.
    assert _play(PeerSelectionEnv(max_rounds=10), 4, ROUTE) == _play(
        PeerSelectionEnv(max_rounds=10, accuracy_of="mean_peer"), 4, ROUTE
    )


def test_hl_pca_reads_every_peers_own_model() -> None:
    env = PeerSelectionEnv(transfer="distill", observation="hl_pca", pca_components=4)
    obs, _ = env.reset(seed=0)
    assert not obs.any()  # ten equal models: no variance
    obs, *_ = env.step(8)
    coords = obs.reshape(10, 4)
    assert np.abs(coords[8]).max() > 0 and np.ptp(np.delete(coords, 8, axis=0), axis=0).max() < 1e-6


def test_evaluation_counts_visits_to_byzantine_peers() -> None:
    env = PeerSelectionEnv(byzantine_peers=2, max_rounds=12, offline_prob=0.3)
    evaluation = evaluate(RoundRobinAgent(), env, 2, seed=8)
    for rec in evaluation.records:
        assert len(rec.byzantine) == 2
    # The last episode's count from the env's own bookkeeping of trained visits.
    rec = evaluation.records[-1]
    assert rec.byzantine_visits == int(env.episode.visits[rec.byzantine].sum()) > 0
    table = format_table({"round_robin": evaluation}, reference="round_robin")
    assert "byz visits" in table.splitlines()[0]
    assert "byz visits" not in format_table({"rr": evaluate(RoundRobinAgent(), PeerSelectionEnv(max_rounds=3), 1)})


@pytest.mark.parametrize("mode", ["average", "distill", "logits"])
def test_gymnasium_check_env_in_every_mode(mode: str) -> None:
    # Determinism of reset(seed) included: the public set, byzantine peers and failures come from the seed.
    check_env(
        PeerSelectionEnv(transfer=mode, link_failure_prob=0.3, byzantine_peers=2, max_rounds=6), skip_render_check=True
    )


@pytest.mark.parametrize("mode", ["average", "distill", "logits"])
def test_staying_trains_locally_with_nothing_arriving(mode: str) -> None:
    # The holder's round without transfer: the same model as the relay's (mix 1 average is
    # the relay, and staying never blends, distils or fits soft targets).
    relay = PeerSelectionEnv(max_rounds=10)
    env = PeerSelectionEnv(transfer=mode, max_rounds=10)
    relay.reset(seed=9)
    env.reset(seed=9)
    for _ in range(2):
        relay.step(0)
        env.step(0)
    assert torch.equal(flat_weights(env.model), flat_weights(relay.model))
