"""Meta-policy training: every --algo end to end, save/load, attention at other peer
counts, the reference DQN's schedule and replay, resume after a kill, results.json."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from hlgym.agents import HLDQNAgent, evaluate
from hlgym.agents.attention import PeerAttentionPolicy
from hlgym.agents.sb3 import SB3Agent
from hlgym.records import SUMMARY_FIELDS
from hlgym.runs import read_episodes

ROOT = Path(__file__).resolve().parents[1]
TINY_ENV = ["--env-kwargs", "max_rounds=4"]
SUMMARY_KEYS = set(SUMMARY_FIELDS)


def train_meta(tmp_path: Path, *args: str, wait: bool = True) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train_meta.py"), "--no-progress", "--out", str(tmp_path / "run"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HLGYM_OFFLINE": "1"},
    )
    if wait:
        proc.wait(timeout=600)
    return proc


def check_results(run: Path, trained: str) -> dict[str, Any]:
    results: dict[str, Any] = json.loads((run / "results.json").read_text())
    assert results["schema_version"] == 1
    assert set(results["policies"]) == {trained, "random", "round_robin", "greedy", "power_of_choice"}
    for pol in results["policies"].values():
        assert set(pol["summary"]) == SUMMARY_KEYS
        for stat in pol["summary"].values():
            assert set(stat) == {"mean", "ci95", "n"} and math.isfinite(stat["mean"])
        for ep in pol["episodes"]:
            assert ep["seed"] >= results["eval_seed"]
            assert len(ep["route"]) == ep["rounds"] - ep["forced_rounds"] + 1
    return results


@pytest.mark.parametrize(
    ("algo", "extra"),
    [
        ("ppo", ["--policy", "attention", "--n-envs", "2"]),
        ("ppo", ["--policy", "mlp"]),
        ("a2c", []),
        ("dqn", ["--n-envs", "1"]),
        ("maskable_ppo", ["--n-envs", "1"]),
        ("recurrent_ppo", ["--n-envs", "1"]),
        ("hl_dqn", []),
    ],
)
def test_every_algo_trains_and_evaluates(tmp_path: Path, algo: str, extra: list[str]) -> None:
    proc = train_meta(tmp_path, "--algo", algo, "--timesteps", "64", "--eval-episodes", "2", *extra, *TINY_ENV)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    run = tmp_path / "run"
    results = check_results(run, algo)
    assert results["timesteps"] == 64
    assert (run / ("model.pt" if algo == "hl_dqn" else "model.zip")).stat().st_size > 0
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["algo"] == algo and config["env_config"]["max_rounds"] == 4
    episodes = read_episodes(run)
    assert len(episodes) >= 64 // 4 - 2 and all(e["rounds"] <= 4 for e in episodes)
    monitor = (run / "monitor.csv").read_text().splitlines()
    assert monitor[0].startswith("#") and monitor[1] == "r,l,t" and len(monitor) - 2 == len(episodes)
    assert any((run / "tb").rglob("events.out.tfevents.*"))
    if algo != "hl_dqn":
        assert json.loads((run / "checkpoints" / "checkpoint.json").read_text())["timesteps"] >= 64


def test_bad_training_arguments(tmp_path: Path) -> None:
    from hlgym import train as tm

    cases = [
        (["--algo", "dqn", "--policy", "attention"], "policy='attention' is not accepted with algo='dqn'"),
        (
            ["--algo", "ppo", "--policy", "attention", "--env-kwargs", "observation=hl_pca"],
            "not accepted with observation",
        ),
        (["--algo", "ppo", "--seed", "10000"], "overlap the training seeds"),
        (["--resume"], "--resume needs --out"),
        (["--seeds", "0", "1", "0"], "--seeds 0 1 0 is not accepted: a seed repeats"),
        (["--seeds", "0", "9999", "--n-envs", "2"], "overlap the training seeds 0..10000"),
        (["--seeds", "0", "1", "--evaluate-model", "model.zip"], "--seeds with --evaluate-model is not accepted"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as err:
            tm.main(
                ["--no-progress", "--timesteps", "8", *args] + ([] if "--resume" in args else ["--out", str(tmp_path)])
            )
        assert message in str(err.value), args
        assert not any(tmp_path.iterdir()), f"{args} wrote files before refusing"


def tiny_ppo(n_peers: int = 10) -> PPO:
    env = gym.make("hlgym/PeerSelection-v0", n_peers=n_peers, max_rounds=4)
    model = PPO(PeerAttentionPolicy, env, n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu")
    return model.learn(64)


def test_saved_policy_gives_identical_actions(tmp_path: Path) -> None:
    model = tiny_ppo()
    model.save(tmp_path / "m.zip")
    loaded = PPO.load(tmp_path / "m.zip", device="cpu")
    obs = np.random.default_rng(0).random((16, 10, 8), dtype=np.float32)
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a, b)
    assert isinstance(loaded.policy, PeerAttentionPolicy) and loaded.policy.net_kwargs == model.policy.net_kwargs


@pytest.mark.parametrize("n_peers", [5, 20])
def test_attention_policy_runs_at_another_peer_count(n_peers: int) -> None:
    agent = SB3Agent(tiny_ppo(10))
    # 20 peers share the digits' ~130 samples per class: half the default samples each.
    env = gym.make("hlgym/PeerSelection-v0", n_peers=n_peers, max_rounds=4, main_samples=25, other_samples=25)
    ev = evaluate(agent, env, episodes=2, seed=100)
    assert all(0 <= p < n_peers for r in ev.records for p in r.route)
    policy = agent.model.policy
    assert isinstance(policy, PeerAttentionPolicy)
    scores, values = policy.peer_scores(torch.zeros(3, n_peers, 8))
    assert scores.shape == (3, n_peers) and values.shape == (3, 1)


def test_attention_policy_is_equivariant_to_peer_order() -> None:
    policy = tiny_ppo().policy
    assert isinstance(policy, PeerAttentionPolicy)
    obs = torch.rand(1, 10, 8)
    perm = torch.randperm(10)
    with torch.no_grad():
        s, v = policy.peer_scores(obs)
        sp, vp = policy.peer_scores(obs[:, perm])
    torch.testing.assert_close(sp, s[:, perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vp, v, rtol=1e-5, atol=1e-5)


def test_hl_dqn_epsilon_schedule_and_replay() -> None:
    agent = HLDQNAgent(obs_dim=4, n_actions=3, seed=0, replay_size=5, minibatch=4)
    obs = np.zeros(4, np.float32)
    agent.remember(obs, 1, -1.0, obs, False, round_=1)  # the forced first round is not stored
    assert len(agent.replay) == 0 and agent.timesteps == 1
    for k in range(7):
        agent.remember(obs + k, k % 3, float(k), obs, k == 6, round_=k + 2)
    assert len(agent.replay) == 5  # bounded memory keeps the newest
    assert [t[2] for t in agent.replay] == [2.0, 3.0, 4.0, 5.0, 6.0]
    for k in range(1, 4):
        agent.end_episode()
        assert agent.epsilon == pytest.approx(math.exp(-0.02 * k))
    assert agent.episodes == 3
    small = HLDQNAgent(obs_dim=4, n_actions=3, minibatch=128)
    small.remember(obs, 0, 0.0, obs, False, round_=2)
    assert small.fit() is None  # fewer transitions than a minibatch: no fit, as the reference


def test_hl_dqn_first_round_at_start_and_greedy_masked() -> None:
    agent = HLDQNAgent(obs_dim=4, n_actions=3, seed=0)
    mask = np.array([True, False, True])
    assert agent.act(np.zeros(4), {"round": 0, "holder": 2, "action_mask": mask}) == 2
    q = agent.q_values(np.ones(4))
    best = int(np.argmax(np.where(mask, q, -np.inf)))
    assert agent.act(np.ones(4), {"round": 3, "holder": 0, "action_mask": mask}) == best


def test_hl_dqn_save_load_round_trip(tmp_path: Path) -> None:
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=4, observation="hl_pca", pca_components=2)
    agent = HLDQNAgent(obs_dim=20, n_actions=10, seed=1, minibatch=8).learn(env, 40, seed=0)
    agent.save(tmp_path / "a.pt")
    clone = HLDQNAgent.load(tmp_path / "a.pt")
    obs = np.random.default_rng(0).random(20)
    np.testing.assert_array_equal(agent.q_values(obs), clone.q_values(obs))
    assert (
        clone.epsilon == agent.epsilon and clone.timesteps == agent.timesteps and len(clone.replay) == len(agent.replay)
    )
    # Continuing both gives the same fit: the RNG states travelled too.
    assert agent.fit() == clone.fit()


class _RunsCode:
    """Unpickling it would call a function: what a checkpoint from a stranger could do."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("this ran while loading",))


def test_hl_dqn_loads_weights_only(tmp_path: Path) -> None:
    agent = HLDQNAgent(obs_dim=20, n_actions=10, seed=1, minibatch=8)
    agent.save(tmp_path / "a.pt")
    torch.load(tmp_path / "a.pt", weights_only=True)  # tensors and plain values only
    torch.save({"hparams": _RunsCode()}, tmp_path / "stranger.pt")
    with pytest.raises(pickle.UnpicklingError):
        HLDQNAgent.load(tmp_path / "stranger.pt")


@pytest.mark.parametrize("algo", ["ppo", "hl_dqn"])
def test_resume_after_sigkill(tmp_path: Path, algo: str) -> None:
    args = ["--algo", algo, "--timesteps", "600", "--checkpoint-every", "100", "--eval-episodes", "1", *TINY_ENV]
    if algo == "ppo":
        args += ["--n-envs", "1", "--policy", "mlp"]
    proc = train_meta(tmp_path, *args, wait=False)
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / ("hl_dqn.pt" if algo == "hl_dqn" else "checkpoint.json")
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = read_episodes(run)
    if algo == "hl_dqn":
        n_ckpt = torch.load(ckpt, weights_only=False)["episodes"]
    else:
        n_ckpt = json.loads(ckpt.read_text())["episodes"]
    assert 0 < n_ckpt <= len(before), "the checkpoint must count episodes the log already holds"

    resumed = train_meta(tmp_path, "--resume", wait=True)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    after = read_episodes(run)
    assert [e["episode"] for e in after] == list(range(len(after)))
    steps = [e["timesteps"] for e in after]
    assert steps == sorted(steps) and steps[-1] >= 600
    # The episodes the checkpoint covered are kept as they were; later ones were replayed.
    assert after[:n_ckpt] == before[:n_ckpt]
    monitor = (run / "monitor.csv").read_text().splitlines()
    assert len(monitor) - 2 == len(after)
    check_results(run, algo)


def test_resume_with_timesteps_extends_a_finished_run(tmp_path: Path) -> None:
    # Two envs: train_meta runs them in the batched vector env.
    # One PPO rollout (n_steps 128 x 2 envs) per budget.
    args = ["--algo", "ppo", "--timesteps", "256", "--n-envs", "2", "--policy", "mlp", "--eval-episodes", "1"]
    first = train_meta(tmp_path, *args, *TINY_ENV)
    _, err = first.communicate()
    assert first.returncode == 0, err
    run = tmp_path / "run"
    n_first = len(read_episodes(run))
    resumed = train_meta(tmp_path, "--resume", "--timesteps", "512")
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert "training budget 256 -> 512 steps" in out
    assert json.loads((run / "config.json").read_text())["args"]["timesteps"] == 512
    after = read_episodes(run)
    assert len(after) > n_first and after[-1]["timesteps"] > 256
    check_results(run, "ppo")


@pytest.mark.slow
def test_trained_attention_policy_beats_random(tmp_path: Path) -> None:
    """The README's claim at a smaller budget: PPO with the attention policy, 20k steps,
    uses fewer rounds and less communication than random on held-out seeds."""
    proc = train_meta(tmp_path, "--algo", "ppo", "--timesteps", "20000", "--eval-episodes", "20")
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    summary = {k: v["summary"] for k, v in check_results(tmp_path / "run", "ppo")["policies"].items()}
    assert summary["ppo"]["rounds"]["mean"] < summary["random"]["rounds"]["mean"]
    assert summary["ppo"]["comm_cost"]["mean"] < 0.7 * summary["random"]["comm_cost"]["mean"]
    assert summary["ppo"]["reached_goal"]["mean"] > summary["random"]["reached_goal"]["mean"]
