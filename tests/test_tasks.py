"""The task distribution: families, fixed spaces, masks, padding, per-family evaluation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env

from hlgym import options, train
from hlgym.agents.attention import PeerSetNet
from hlgym.envs import (
    BatchedPeerSelectionVectorEnv,
    PeerSelectionConfig,
    PeerSelectionEnv,
    ResetNeededError,
    TaskDistributionEnv,
)
from hlgym.envs.registration import TASKS
from hlgym.envs.tasks import TaskSpec
from hlgym.runs import RunFolder

ENV = "hlgym/TaskDistribution-v0"
SMALL: dict[str, Any] = {
    "max_peers": 6,
    "split": "train",
    "train": [
        {"name": "skew", "partition": "hl_skew", "n_peers": {"choice": [3, 4]}, "goal": 0.5},
        {"name": "dir", "partition": "dirichlet", "n_peers": 5, "dirichlet_alpha": {"choice": [0.3, 1.0]}},
    ],
    "held_out": [{"name": "dir6", "partition": "dirichlet", "n_peers": 6, "dirichlet_alpha": 0.1}],
}


def small(**spec: Any) -> TaskDistributionEnv:
    return TaskDistributionEnv(tasks={**SMALL, **spec}, max_rounds=4)


def test_spaces_are_fixed_and_padding_rows_are_zero_with_a_presence_column() -> None:
    env = small()
    assert env.observation_space.shape == (6, 9) and env.action_space == gym.spaces.Discrete(6)
    assert env.feature_names[-1] == "present"
    seen = set()
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        n = info["n_peers"]
        seen.add((info["task"]["family"], n))
        assert env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs[:, -1], np.arange(6) < n)
        assert not obs[n:].any()
        assert obs[:n, :-1].sum(axis=1).min() > 0  # a present row is never all zeros
        np.testing.assert_array_equal(info["action_mask"], np.arange(6) < n)
        np.testing.assert_array_equal(env.action_masks(), info["action_mask"])
    assert {f for f, _ in seen} == {"skew", "dir"} and {n for _, n in seen} == {3, 4, 5}


def test_the_same_seed_draws_the_same_task_and_episode() -> None:
    a, b = small(), small()
    for seed in (0, 5):
        oa, ia = a.reset(seed=seed)
        ob, ib = b.reset(seed=seed)
        assert ia["task"] == ib["task"]
        np.testing.assert_array_equal(oa, ob)
        for action in (1, 2, 0):
            sa, sb = a.step(action), b.step(action)
            np.testing.assert_array_equal(sa[0], sb[0])
            assert sa[1] == sb[1]


def test_an_absent_peer_keeps_the_model_at_its_holder_and_says_so() -> None:
    env = small(split="skew")
    _, info = env.reset(seed=0)
    holder = info["holder"]
    _, _, _, _, info = env.step(5)  # the skew tasks have 3 or 4 peers
    assert info["absent_peer"] and info["holder"] == holder and info["hop_cost"] == 0.0
    _, _, _, _, info = env.step(1)
    assert not info["absent_peer"] and info["holder"] == 1
    with pytest.raises(ValueError, match=r"action=6 is not accepted; accepted: an integer peer index in \[0, 5\]"):
        env.step(6)


def test_splits_draw_only_their_families_and_use_each_tasks_goal() -> None:
    held = small(split="held_out")
    for seed in range(3):
        _, info = held.reset(seed=seed)
        assert info["task"]["family"] == "dir6" and info["n_peers"] == 6 and info["goal"] == 0.86
    one = small(split="skew")
    _, info = one.reset(seed=0)
    assert info["task"]["family"] == "skew" and info["goal"] == 0.5


def test_before_reset_the_env_says_to_reset() -> None:
    env = small()
    assert not env.action_masks().any() and env.route == [] and env.n_peers == 0
    with pytest.raises(ResetNeededError, match=r"call reset\(\) first"):
        env.step(0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": 1}, r"tasks\.colour is not accepted; accepted keys: max_peers, split, train, held_out"),
        ({"train": []}, r"tasks\.train=\[\] is not accepted; accepted: at least one family"),
        ({"split": "nope"}, r"tasks\.split='nope' is not accepted; accepted: train, held_out, skew, dir, dir6"),
        ({"split": "held_out", "held_out": []}, r"tasks\.split='held_out' is not accepted.*needs a held-out family"),
        ({"max_peers": 4}, r"tasks family 'dir': n_peers=5 is not accepted; accepted: at most tasks\.max_peers=4"),
        (
            {"held_out": [{"name": "skew", "partition": "iid"}]},
            r"the family name 'skew' is used twice; accepted: distinct names",
        ),
        (
            {"held_out": [{**SMALL["train"][1], "name": "copy"}]},
            r"held_out family 'copy' has the fields of train family 'dir'",
        ),
        (
            {"held_out": [{"name": "x", "n_peers": {"choice": []}}]},
            r"tasks\.held_out\[0\]\.n_peers=\{'choice': \[\]\} is not accepted",
        ),
        ({"held_out": [{"name": "x", "dirichlet_alpha": -1}]}, r"tasks family 'x': dirichlet_alpha=-1 is not accepted"),
        (
            {"held_out": [{"name": "x", "gaol": 0.5}]},
            r"'gaol' is not a PeerSelectionConfig field \(did you mean 'goal'",
        ),
        (
            {"held_out": [{"name": "x", "n_peers": 4, "domain_shift": "rotate"}]},
            r"family 'skew' observes .* but 'x' observes .*target_distance",
        ),
    ],
)
def test_bad_task_specs_name_the_key_and_what_is_accepted(change: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        # JSON, as gym.make passes it (the field holds the parsed TaskSpec)
        PeerSelectionConfig(tasks={**SMALL, **change})  # type: ignore[arg-type]


def test_single_task_envs_refuse_a_task_spec() -> None:
    with pytest.raises(ValueError, match=r"tasks is not accepted by PeerSelectionEnv"):
        PeerSelectionEnv(tasks=SMALL)
    with pytest.raises(ValueError, match=r"tasks is not accepted by BatchedPeerSelection \(one task\)"):
        BatchedPeerSelectionVectorEnv(2, config=PeerSelectionConfig(tasks=TaskSpec.from_dict(SMALL)))
    with pytest.raises(ValueError, match=r"tasks=None is not accepted by TaskDistributionEnv"):
        TaskDistributionEnv()


def test_the_registered_spec_is_plain_json_and_reads_back() -> None:
    kwargs = gym.spec(ENV).kwargs
    assert json.loads(json.dumps(kwargs)) == kwargs
    spec = TaskSpec.from_dict(kwargs["config"]["tasks"])
    assert spec == TaskSpec.from_dict(TASKS) and spec.to_dict()["held_out"] == TASKS["held_out"]
    assert {f.name for f in spec.train}.isdisjoint(f.name for f in spec.held_out)


def test_the_env_passes_gymnasiums_and_sb3s_checks() -> None:
    env = gym.make(ENV, max_rounds=4)
    gym_check_env(env.unwrapped, skip_render_check=True)
    check_env(small(), warn=False)


def test_the_attention_network_is_blind_to_padding() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = PeerSetNet(9, d_model=16, n_heads=2, n_layers=1).eval()
    env = small(split="dir")
    obs, _ = env.reset(seed=0)
    trimmed = torch.as_tensor(obs[:5])[None]
    padded = torch.as_tensor(obs)[None]
    s_trim, v_trim = net(trimmed)
    s_pad, v_pad = net(padded)
    torch.testing.assert_close(s_pad[:, :5], s_trim, atol=1e-6, rtol=0)
    torch.testing.assert_close(v_pad, v_trim, atol=1e-6, rtol=0)
    assert bool((s_pad[:, 5:] == torch.finfo(torch.float32).min).all())


def test_lookahead_plays_a_task_on_a_copy() -> None:
    from hlgym.agents import LookaheadAgent, evaluate

    env = small(split="skew")
    agent = LookaheadAgent()
    agent.bind(env)
    ev = evaluate(agent, env, 1, seed=0)
    assert ev.records[0].rounds >= 1


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_hlgym_train_reports_every_held_out_family(tmp_path: Path, algo: str) -> None:
    spec = copy.deepcopy(SMALL)
    out = tmp_path / algo
    results = train.main(
        [
            *("--env", ENV, "--algo", algo, "--timesteps", "64", "--n-envs", "2", "--eval-episodes", "2"),
            *("--out", str(out), "--no-progress", "--env-kwargs", "max_rounds=4", f"tasks={json.dumps(spec)}"),
        ]
    )
    assert set(results) >= {algo, "random", "greedy"}
    saved = RunFolder(out).read_results()
    assert set(saved["families"]) == {"dir6"}
    assert set(saved["families"]["dir6"]) == set(results)
    family = RunFolder(out).read_family_evaluations()["dir6"]
    assert all(len(ev.records) == 2 for ev in family.values())


def test_one_key_of_the_spec_changes_from_the_command_line_or_make() -> None:
    overrides: dict[str, Any] = {"tasks.split": "hl_skew_20", "max_rounds": 4}
    env = gym.make(ENV, **overrides)
    _, info = env.reset(seed=0)
    assert info["task"]["family"] == "hl_skew_20" and info["n_peers"] == 20
    _, config, _ = train.resolve(options.parse_args(["--env", ENV, "--env-kwargs", "tasks.split=held_out"]))
    assert config.tasks is not None and config.tasks.split == "held_out"
    with pytest.raises(SystemExit, match=r"'tasks\.spilt' is not a key of tasks; accepted: max_peers, split"):
        train.resolve(options.parse_args(["--env", ENV, "--env-kwargs", "tasks.spilt=held_out"]))
    with pytest.raises(ValueError, match=r"tasks\.split='held_out' is not accepted: the config has no tasks"):
        PeerSelectionConfig().replace(**{"tasks.split": "held_out"})


def test_seeds_summarise_each_held_out_family_over_the_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seeds"
    train.main(
        [
            *("--env", ENV, "--seeds", "0", "1", "--timesteps", "64", "--n-envs", "1", "--eval-episodes", "2"),
            *("--out", str(out), "--no-progress", "--env-kwargs", "max_rounds=4", f"tasks={json.dumps(SMALL)}"),
        ]
    )
    assert "held-out family dir6, over the 2 seeds:" in capsys.readouterr().out
    family = RunFolder(out).read_results()["families"]["dir6"]
    per_seed = [RunFolder(out / f"seed_{k}").read_family_evaluations()["dir6"] for k in (0, 1)]
    assert family["ppo"]["per_seed"]["rounds"] == [ev["ppo"].summary["rounds"].mean for ev in per_seed]
    assert family["ppo"]["summary"]["rounds"]["n"] == 2 and "vs_reference" in family["ppo"]


def test_a_copy_plays_on_from_the_current_task_alone() -> None:
    env = small()
    for seed in range(6):  # several tasks built and kept
        env.reset(seed=seed)
    twin = copy.deepcopy(env)
    assert len(env._envs) > 1 and list(twin._envs.values()) == [twin.task_env]
    a, b = env.step(0), twin.step(0)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and twin.task == env.task
    twin.reset(seed=100)  # the copy draws and builds tasks of its own


def test_a_task_the_data_cannot_serve_names_its_family() -> None:
    spec = {**SMALL, "train": [{"name": "greedy_split", "partition": "hl_skew", "n_peers": 4, "main_samples": 900}]}
    env = TaskDistributionEnv(tasks=spec, max_rounds=4)
    with pytest.raises(ValueError, match=r"tasks family 'greedy_split', task .*main_samples=900 asks for more samples"):
        env.reset(seed=0)
